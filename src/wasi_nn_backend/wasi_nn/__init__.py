"""The original C API, function for function, in Python: every function returns an ErrorCode,
and out-values come back as return values: ``(code, value)``; value is None on an error.

    code, ctx = init_backend_with_config('{"backend": {"max_sessions": 10}}')
    code, g = load_by_name_with_config(ctx, "model.gguf", None, '{"model": {"n_ctx": 2048}}')
    code, exec_ctx = init_execution_context(ctx, g)
    code = set_input(ctx, exec_ctx, 0, Tensor([len(p)], TensorType.U8, p))
    code = compute(ctx, exec_ctx)
    out = bytearray(4096); code, size = get_output(ctx, exec_ctx, 0, out)

No input, however bad, raises or crashes: a None handle is invalid_argument, an unknown or
closed handle not_found, a buffer too small too_large with the size needed (nothing is written).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..api.backend import Backend, Graph
from ..api.exec_context import USAGE_BUILD_KEYS, ExecutionContext
from ..api.wasi_types import ExecutionTarget, GraphEncoding, TensorType, check_load_target
from ..api import Clock, registry
from ..errors import ErrorCode, InvalidArgument, WasiNnError
from .args import Tensor, buffer, write
from .args import builders as _builders, handle as _handle, index as _index
from .args import integer as _integer, tensor_bytes as _tensor_bytes, text as _text

log = logging.getLogger("wasi_nn_backend.api")

__all__ = [   # the C API's functions, and the types a caller passes them
    "ErrorCode", "ExecutionTarget", "GraphEncoding", "Tensor", "TensorType", "USAGE_BUILD_KEYS",
    "backend_of", "close_execution_context", "compute", "compute_single", "deinit_backend",
    "finalize_execution_context", "fini_single", "get_output", "get_output_single",
    "init_backend", "init_backend_with_config", "init_execution_context",
    "init_execution_context_with_session_id", "load", "load_by_name",
    "load_by_name_with_config", "run_inference", "set_input", "unload"]

def _report(fn: Callable[..., Any], error: BaseException) -> tuple[ErrorCode, Any]:
    """This edge's border: an exception becomes its code (a WasiNnError's own, with the size
    needed for too_large; anything else is a bug: unknown, logged with its traceback)."""
    if isinstance(error, WasiNnError):
        log.info("%s: %s (%s)", fn.__name__, error.message, error.code.name.lower())
        return error.code, getattr(error, "needed", None)
    log.exception("%s failed unexpectedly", fn.__name__, exc_info=error)
    return ErrorCode.UNKNOWN, None


def _code(fn: Callable[..., None]) -> Callable[..., ErrorCode]:
    """A call with no out-value: success, or the error's code."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> ErrorCode:
        try:
            fn(*args, **kwargs)
        except Exception as error:
            return _report(fn, error)[0]
        return ErrorCode.SUCCESS
    return call


def _value(fn: Callable[..., Any]) -> Callable[..., tuple[ErrorCode, Any]]:
    """A call with an out-value: (success, value), or (the error's code, None; for too_large
    the size needed)."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> tuple[ErrorCode, Any]:
        try:
            value = fn(*args, **kwargs)
        except Exception as error:
            return _report(fn, error)
        return ErrorCode.SUCCESS, value
    return call


def backend_of(ctx: Any) -> Backend:
    """The Backend object behind a backend handle (NotFound if unknown), for hosts that need
    its Python API (stats, sessions) next to the function API."""
    return registry.backend(_handle(ctx, "backend"))


def _context(ctx: Any, exec_ctx: Any) -> ExecutionContext:
    return backend_of(ctx).context(_handle(exec_ctx, "execution context"))


# -- backend ---------------------------------------------------------------------------------
@_value
def init_backend() -> int:
    return registry.open_backend(None)


@_value
def init_backend_with_config(config: Any, config_len: int | None = None, *,
                             clock: Clock | None = None) -> int:
    """``clock`` (keyword only, not in the C API) injects time for idle and deadline tests."""
    return registry.open_backend(_text(config, config_len, "config"), clock=clock)


@_code
def deinit_backend(ctx: Any) -> None:
    registry.close_backend(_handle(ctx, "backend"))


# -- graphs ----------------------------------------------------------------------------------
@_value
def load(ctx: Any, builders: Sequence[bytes], encoding: int, target: int) -> int:
    """Load a model from bytes: builders[0] is the GGUF file, builders[1] optional config JSON."""
    backend = backend_of(ctx)
    check_load_target(_integer(encoding, "the graph encoding"),
                      _integer(target, "the execution target"))
    model, config = _builders(builders)
    return backend.load_bytes(model, config).handle


@_value
def load_by_name(ctx: Any, name: Any, name_len: int | None = None) -> int:
    return _load_by_name(ctx, name, name_len, None, None)


@_value
def load_by_name_with_config(ctx: Any, name: Any, name_len: int | None, config: Any,
                             config_len: int | None = None) -> int:
    return _load_by_name(ctx, name, name_len, config, config_len)


def _load_by_name(ctx: Any, name: Any, name_len: int | None, config: Any,
                  config_len: int | None) -> int:
    """A graph handle for the model file ``name`` (Backend.load): the graph already serving it
    with an equal parsed config if there is one (shared: unload ends it for every holder);
    with backend.hot_swap a swap into the graph loaded last (same handle); else a new graph
    beside the others. model_not_found, invalid_encoding, too_large (value: bytes needed)."""
    backend = backend_of(ctx)
    path = _text(name, name_len, "model name", paths=True)
    if not path:
        raise InvalidArgument("the model name is None or empty")
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    return backend.load(path, _text(config, config_len, "config")).handle


@_code
def unload(ctx: Any, graph: Any) -> None:
    """Unload (Graph.close): running requests are cancelled, the graph's contexts and handle
    become not_found, its engine stops and its models are freed."""
    backend_of(ctx).graph(_handle(graph, "graph")).close()


# -- execution contexts ----------------------------------------------------------------------
@_value
def init_execution_context(ctx: Any, graph: Any) -> int:
    return backend_of(ctx).graph(_handle(graph, "graph")).session().handle


@_value
def init_execution_context_with_session_id(ctx: Any, session_id: Any, graph: Any = None
                                           ) -> int:
    """The session with this id (history kept), or a new one; on ``graph``, else the graph a
    load returned last."""
    backend = backend_of(ctx)
    name = _text(session_id, None, "session id")
    if not name:
        raise InvalidArgument("the session id is None or empty")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    target: Graph = (backend.graph(_handle(graph, "graph")) if graph is not None
                     else backend.latest_graph())
    return target.session(name).handle


@_code
def close_execution_context(ctx: Any, exec_ctx: Any) -> None:
    backend_of(ctx).session(_handle(exec_ctx, "execution context")).close()


finalize_execution_context = close_execution_context


@_code
def set_input(ctx: Any, exec_ctx: Any, index: int, tensor: Any) -> None:
    _context(ctx, exec_ctx).set_input(_index(index), _tensor_bytes(tensor))


@_code
def compute(ctx: Any, exec_ctx: Any) -> None:
    _context(ctx, exec_ctx).compute()


@_value
def get_output(ctx: Any, exec_ctx: Any, index: int, out: Any) -> int:
    """Write output ``index`` into ``out``: (success, bytes written) or (too_large, needed)."""
    return _write_output(ctx, exec_ctx, index, out, ExecutionContext.output)


@_code
def compute_single(ctx: Any, exec_ctx: Any) -> None:
    _context(ctx, exec_ctx).compute_single()


@_value
def get_output_single(ctx: Any, exec_ctx: Any, index: int, out: Any) -> int:
    """get_output for the last piece compute_single made (index 0) or the usage (1)."""
    return _write_output(ctx, exec_ctx, index, out, ExecutionContext.output_single)


def _write_output(ctx: Any, exec_ctx: Any, index: int, out: Any,
                  read: Callable[[ExecutionContext, int], bytes]) -> int:
    context = _context(ctx, exec_ctx)
    view = buffer(out)
    return write(view, read(context, _index(index)))


@_code
def fini_single(ctx: Any, exec_ctx: Any) -> None:
    _context(ctx, exec_ctx).fini_single()


def run_inference(ctx: Any, exec_ctx: Any, index: int, tensor: Any, out: Any,
                  runtime_config: Any = None, runtime_config_len: int | None = None
                  ) -> tuple[ErrorCode, Any]:
    """Chat mode: the tensor is the user's message; the reply (UTF-8, NUL-terminated as in the
    original) goes into ``out``. Returns (code, size including the NUL). Every argument is
    checked before anything is generated. A reply that does not fit ``out`` is too_large with
    the size needed and leaves no trace: the conversation stays as it was (the retry generates
    again). get_output then reads this request's text (index 0) and usage (index 1)."""
    try:
        context = _context(ctx, exec_ctx)
        if _index(index) != 0:
            raise InvalidArgument(f"input index {index} does not exist for run_inference (0)")
        message = _tensor_bytes(tensor)
        view = buffer(out)
        overrides = _text(runtime_config, runtime_config_len, "runtime config")
        written: list[int] = []   # the bytes delivered, NUL included
        completion = context.run_inference(
            message, overrides, lambda reply: written.append(write(view, reply + b"\0")))
    except Exception as error:
        return _report(run_inference, error)
    error = completion.error()  # context full, timeout, closed: the partial text is written
    return (error.code if error else ErrorCode.SUCCESS), written[0]
