"""adapters/erlang/ops.py on the Python API, without a port: the backends a port made are
closed when it ends, never raising, even for a handle a request deinitialized meanwhile."""
from __future__ import annotations

import pytest

from wasi_nn_backend.adapters.erlang.ops import OPS, Backends, Call, error_term
from wasi_nn_backend.api import registry
from wasi_nn_backend.errors import BackendRuntimeError, ErrorCode, InvalidArgument, NotFound


def test_close_all_closes_each_backend_and_never_raises():
    backends = Backends()
    kept, gone = registry.open_backend(None), registry.open_backend(None)
    backends.add(kept)
    backends.add(gone)
    registry.close_backend(gone)           # deinitialized behind the port's back
    assert backends.close_all() == 2
    with pytest.raises(NotFound):
        registry.backend(kept)


def test_a_backend_made_while_the_port_ends_is_closed_at_once():
    backends = Backends()
    backends.close_all()
    handle = registry.open_backend(None)
    with pytest.raises(BackendRuntimeError, match="shutting down"):
        backends.add(handle)
    with pytest.raises(NotFound):
        registry.backend(handle)


def test_handlers_check_their_arguments_after_the_backend():
    call = Call(Backends())
    load, init = OPS["load_by_name_with_config"].handler, OPS["init_execution_context"].handler
    with pytest.raises(NotFound):
        load(call, 987_654, b"", b"")
    handle = registry.open_backend(None)
    try:
        with pytest.raises(InvalidArgument, match="Path is empty"):
            load(call, handle, b"", b"")
        with pytest.raises(InvalidArgument, match="session id"):
            init(call, handle, b"")
        with pytest.raises(InvalidArgument, match="no model is loaded"):
            init(call, handle, b"s")
    finally:
        registry.close_backend(handle)


def test_an_error_message_with_a_lone_surrogate_stays_utf8():
    _, (_, message) = error_term(ErrorCode.MODEL_NOT_FOUND, "no file /a/\udcff.gguf")
    assert message.value == b"no file /a/\\udcff.gguf"
