"""Shared by the function-API tests (tests/ is on sys.path)."""
from __future__ import annotations

import pytest

from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.errors import ErrorCode


def ok(result):
    """The value of a successful (code, value) function-API result; fails on any other code."""
    code, value = result
    assert code == ErrorCode.SUCCESS, code
    return value


@pytest.fixture
def ctx():
    """A function-API backend handle, deinitialized after the test (import it by name)."""
    handle = ok(nn.init_backend())
    yield handle
    nn.deinit_backend(handle)
