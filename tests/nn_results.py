"""Shared by the function-API tests (tests/ is on sys.path)."""
from __future__ import annotations

from wasi_nn_backend.errors import ErrorCode


def ok(result):
    """The value of a successful (code, value) function-API result; fails on any other code."""
    code, value = result
    assert code == ErrorCode.SUCCESS, code
    return value
