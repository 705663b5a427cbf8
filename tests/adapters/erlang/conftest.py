"""The Erlang toolchains the tests here share: erl/erlc (with eunit) and rebar3, found or
installed once per session (erlang_toolchain.py); a test fails with the reason when one is
missing and cannot be installed."""
from __future__ import annotations

import pytest

try:  # tests/adapters/erlang as a package, or (pytest's default rootdir mode) as a plain directory
    from . import erlang_toolchain
except ImportError:
    import erlang_toolchain


@pytest.fixture(scope="session")
def erlang() -> erlang_toolchain.Toolchain:
    toolchain, status = erlang_toolchain.toolchain_status()
    if toolchain is None:
        pytest.fail(f"the Erlang toolchain is unavailable: {status}", pytrace=False)
    return toolchain


@pytest.fixture(scope="session")
def rebar3() -> erlang_toolchain.Rebar3:
    found, status = erlang_toolchain.rebar3_status()
    if found is None:
        pytest.fail(f"rebar3 is unavailable: {status}", pytrace=False)
    return found
