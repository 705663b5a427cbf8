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
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, TypeVar

from ..api.backend import Backend, Graph
from ..core.clock import Clock
from ..core.request import Completion
from ..llm.lib import build_info
from ..errors import ErrorCode, InvalidArgument, NotFound, UnsupportedOperation, WasiNnError
from ..api.exec_context import ContextIO
from .args import Tensor, TensorType, buffer, write
from .args import builders as _builders, handle as _handle, index as _index
from .args import integer as _integer, tensor_bytes as _tensor_bytes, text as _text

log = logging.getLogger("wasi_nn_backend.api")
T = TypeVar("T")


class GraphEncoding(IntEnum):
    AUTODETECT_OR_GGML = 5  # witx autodetect; WIT and WAMR ggml
    GGML = 6                # WasmEdge GGML


class ExecutionTarget(IntEnum):
    CPU = 0
    GPU = 1
    TPU = 2
    AUTO = 3


class _Entry:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.ios: dict[int, ContextIO] = {}
        self.lock = threading.Lock()

    def io(self, exec_ctx: Any) -> ContextIO:
        session = self.backend.session(_handle(exec_ctx, "execution context"))
        with self.lock:
            io = self.ios.get(session.handle)
            if io is None:
                # Sessions also end by idle cleanup, eviction or unload: forget their I/O here.
                for handle in [h for h, old in self.ios.items() if old.session.closed]:
                    del self.ios[handle]
                if session.closed:
                    raise NotFound(f"execution context {session.handle} is closed")
                io = self.ios[session.handle] = ContextIO(session, _BUILD_INFO)
            return io


USAGE_BUILD_KEYS = ("llama_build_number", "llama_commit", "llama_version", "llama_cpp_python",
                    "ggml_version", "ggml_commit")
_BUILD_INFO: dict[str, Any] = {}
_backends: dict[int, _Entry] = {}
_backend_ids = itertools.count(1)
_lock = threading.Lock()


def _api(fn: Callable[..., T]) -> Callable[..., Any]:
    """Turn exceptions into codes: a WasiNnError into its code, anything else (a bug) into
    unknown, logged with its traceback. Tuple-returning functions get (code, None)."""
    returns_pair = fn.__annotations__.get("return") == "tuple[ErrorCode, Any]"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WasiNnError as error:
            log.info("%s: %s (%s)", fn.__name__, error.message, error.code.name.lower())
            code, value = error.code, getattr(error, "needed", None)
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            code, value = ErrorCode.UNKNOWN, None
        return (code, value) if returns_pair else code
    return wrapper


def backend_of(ctx: Any) -> Backend:
    """The Backend object behind a backend handle (NotFound if unknown), for hosts that need
    its Python API (stats, sessions) next to the function API."""
    return _entry(ctx).backend


def _entry(ctx: Any) -> _Entry:
    handle = _handle(ctx, "backend")
    with _lock:
        entry = _backends.get(handle)
    if entry is None:
        raise NotFound(f"no backend with handle {handle} (never made, or deinitialized)")
    return entry


# -- backend ---------------------------------------------------------------------------------
@_api
def init_backend() -> tuple[ErrorCode, Any]:
    return init_backend_with_config(None, None)


@_api
def init_backend_with_config(config: Any, config_len: int | None = None, *,
                             clock: Clock | None = None) -> tuple[ErrorCode, Any]:
    """``clock`` (keyword only, not in the C API) injects time for idle and deadline tests."""
    if not _BUILD_INFO:  # the build facts every usage JSON carries (as WasmEdge's does)
        info = build_info()
        _BUILD_INFO.update({key: info[key] for key in USAGE_BUILD_KEYS if key in info})
    backend = Backend(_text(config, config_len, "config"), clock=clock)
    with _lock:
        handle = next(_backend_ids)
        _backends[handle] = _Entry(backend)
    return ErrorCode.SUCCESS, handle


@_api
def deinit_backend(ctx: Any) -> ErrorCode:
    handle = _handle(ctx, "backend")
    with _lock:
        entry = _backends.pop(handle, None)
    if entry is None:
        raise NotFound(f"no backend with handle {handle} (already deinitialized?)")
    entry.backend.close()
    return ErrorCode.SUCCESS


# -- graphs ----------------------------------------------------------------------------------
@_api
def load(ctx: Any, builders: Sequence[bytes], encoding: int, target: int
         ) -> tuple[ErrorCode, Any]:
    """Load a model from bytes: builders[0] is the GGUF file, builders[1] optional config JSON."""
    entry = _entry(ctx)
    if _integer(encoding, "the graph encoding") not in (GraphEncoding.AUTODETECT_OR_GGML,
                                                        GraphEncoding.GGML):
        raise UnsupportedOperation(f"graph encoding {encoding} is not GGML (5 or 6)")
    if _integer(target, "the execution target") not in tuple(ExecutionTarget):
        raise InvalidArgument(f"execution target {target} is not one of 0..3")
    model, config = _builders(builders)
    return ErrorCode.SUCCESS, entry.backend.load_bytes(model, config).handle


@_api
def load_by_name(ctx: Any, name: Any, name_len: int | None = None) -> tuple[ErrorCode, Any]:
    return load_by_name_with_config(ctx, name, name_len, None, None)


@_api
def load_by_name_with_config(ctx: Any, name: Any, name_len: int | None, config: Any,
                             config_len: int | None = None) -> tuple[ErrorCode, Any]:
    """A graph handle for the model file ``name`` (Backend.load): the graph already serving it
    with an equal parsed config if there is one (shared: unload ends it for every holder);
    with backend.hot_swap a swap into the graph loaded last (same handle); else a new graph
    beside the others. model_not_found, invalid_encoding, too_large (value: bytes needed)."""
    entry = _entry(ctx)
    path = _text(name, name_len, "model name", paths=True)
    if not path:
        raise InvalidArgument("the model name is None or empty")
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    graph = entry.backend.load(path, _text(config, config_len, "config"))
    return ErrorCode.SUCCESS, graph.handle


@_api
def unload(ctx: Any, graph: Any) -> ErrorCode:
    """Unload (Graph.close): running requests are cancelled, the graph's contexts and handle
    become not_found, its engine stops and its models are freed."""
    _entry(ctx).backend.graph(_handle(graph, "graph")).close()
    return ErrorCode.SUCCESS


# -- execution contexts ----------------------------------------------------------------------
@_api
def init_execution_context(ctx: Any, graph: Any) -> tuple[ErrorCode, Any]:
    entry = _entry(ctx)
    return ErrorCode.SUCCESS, entry.backend.graph(_handle(graph, "graph")).session().handle


@_api
def init_execution_context_with_session_id(ctx: Any, session_id: Any, graph: Any = None
                                           ) -> tuple[ErrorCode, Any]:
    """The session with this id (history kept), or a new one; on ``graph``, else the graph a
    load returned last."""
    entry = _entry(ctx)
    name = _text(session_id, None, "session id")
    if not name:
        raise InvalidArgument("the session id is None or empty")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return ErrorCode.SUCCESS, _graph_or_last(entry, graph).session(name).handle


def _graph_or_last(entry: _Entry, graph: Any) -> Graph:
    if graph is not None:
        return entry.backend.graph(_handle(graph, "graph"))
    graphs = entry.backend.graphs
    if not graphs:
        raise InvalidArgument("no model is loaded")
    return graphs[-1]


@_api
def close_execution_context(ctx: Any, exec_ctx: Any) -> ErrorCode:
    entry = _entry(ctx)
    session = entry.backend.session(_handle(exec_ctx, "execution context"))
    with entry.lock:
        entry.ios.pop(session.handle, None)
    session.close()
    return ErrorCode.SUCCESS


finalize_execution_context = close_execution_context


@_api
def set_input(ctx: Any, exec_ctx: Any, index: int, tensor: Any) -> ErrorCode:
    _entry(ctx).io(exec_ctx).set_input(_index(index), _tensor_bytes(tensor))
    return ErrorCode.SUCCESS


@_api
def compute(ctx: Any, exec_ctx: Any) -> ErrorCode:
    _entry(ctx).io(exec_ctx).compute()
    return ErrorCode.SUCCESS


@_api
def get_output(ctx: Any, exec_ctx: Any, index: int, out: Any) -> tuple[ErrorCode, Any]:
    """Write output ``index`` into ``out``: (success, bytes written) or (too_large, needed)."""
    io = _entry(ctx).io(exec_ctx)
    view = buffer(out)
    return ErrorCode.SUCCESS, write(view, io.output(_index(index)))


@_api
def compute_single(ctx: Any, exec_ctx: Any) -> ErrorCode:
    _entry(ctx).io(exec_ctx).compute_single()
    return ErrorCode.SUCCESS


@_api
def get_output_single(ctx: Any, exec_ctx: Any, index: int, out: Any) -> tuple[ErrorCode, Any]:
    io = _entry(ctx).io(exec_ctx)
    view = buffer(out)
    return ErrorCode.SUCCESS, write(view, io.output_single(_index(index)))


@_api
def fini_single(ctx: Any, exec_ctx: Any) -> ErrorCode:
    _entry(ctx).io(exec_ctx).fini_single()
    return ErrorCode.SUCCESS


@_api
def run_inference(ctx: Any, exec_ctx: Any, index: int, tensor: Any, out: Any,
                  runtime_config: Any = None, runtime_config_len: int | None = None
                  ) -> tuple[ErrorCode, Any]:
    """Chat mode: the tensor is the user's message; the reply (UTF-8, NUL-terminated as in the
    original) goes into ``out``. Returns (code, size including the NUL). Every argument is
    checked before anything is generated. A reply that does not fit ``out`` is too_large with
    the size needed and leaves no trace: the conversation stays as it was (the retry generates
    again). get_output then reads this request's text (index 0) and usage (index 1)."""
    io = _entry(ctx).io(exec_ctx)
    if _index(index) != 0:
        raise InvalidArgument(f"input index {index} does not exist for run_inference (0)")
    message = _tensor_bytes(tensor)
    view = buffer(out)
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"the message is not UTF-8: {error}") from None
    overrides = _text(runtime_config, runtime_config_len, "runtime config")
    reply: list[bytes] = []

    def deliver(completion: Completion) -> None:   # before the turn joins the history
        reply.append(completion.text.encode("utf-8"))
        write(view, reply[0] + b"\0")
        io.record(completion, reply[0])

    completion = io.session.chat(text, overrides or None, deliver=deliver)
    error = completion.error()  # context full, timeout, closed: the partial text is written
    return (error.code if error else ErrorCode.SUCCESS), len(reply[0]) + 1
