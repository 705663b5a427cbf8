"""The twelve ``wasi_ephemeral_nn`` imports for one guest: guest memory <-> wasi_nn calls.

Every import takes i32 parameters and returns an i32 nn_errno in witx numbering. Nothing a
guest passes makes an import raise or trap: a bad pointer is invalid_argument, an unknown
handle not_found, a bug unknown (witx runtime_error), logged. (wasmtime-py keeps a Python
exception raised in a host function in a process-wide slot, so raising from here could even
surface in another thread's guest.)

Guest handles are u32s counted per guest from 0 and never reused; they map to the host's
shared graphs and to backend execution contexts, so a guest reaches only what it made.
"""
from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime import FuncType, Linker, ValType

from ... import wasi_nn
from ...errors import (ErrorCode, InvalidArgument, NotFound, TooLarge, UnsupportedOperation,
                       WasiNnError, witx_code)
from .deadline import RunDeadline
from .host import NnHost, SharedGraph
from .memory import WITX_MISSING_MEMORY, GuestMemory, MissingMemory, u32
from .names import PRELOAD_PREFIX
from .outputs import compute_printing, fetch_output, stream_stdout_flag

log = logging.getLogger("wasi_nn_backend.wasm")

MODULE = "wasi_ephemeral_nn"
ARITY = {
    "load": 5, "load_by_name": 3, "load_by_name_with_config": 5, "init_execution_context": 2,
    "set_input": 3, "compute": 1, "get_output": 5, "compute_single": 1, "get_output_single": 5,
    "fini_single": 1, "unload": 1, "finalize_execution_context": 1,
}


@dataclass
class _Context:
    handle: int           # the backend's execution context
    graph: SharedGraph
    stream_stdout: bool   # WasmEdge's stream-stdout: compute prints each piece (outputs.py)


def _guarded(name: str, fn: Callable[..., Any], check: Callable[[], None]
             ) -> Callable[..., int]:
    """An import body that returns an ErrorCode (or raises WasiNnError) -> a witx code;
    ``check`` runs first (Timeout once the run's time is up)."""
    @functools.wraps(fn)
    def call(caller: Any, *params: int) -> int:
        try:
            check()
            code = fn(caller, *(u32(p) for p in params))
        except MissingMemory as error:
            log.info("%s: %s", name, error.message)
            return WITX_MISSING_MEMORY
        except WasiNnError as error:
            log.info("%s: %s (%s)", name, error.message, error.code.name.lower())
            code = error.code
        except Exception:
            log.exception("%s failed unexpectedly", name)
            code = ErrorCode.UNKNOWN
        return witx_code(code)
    return call


class GuestNn:
    """One guest's view of an NnHost: its handles, and what it holds in the backend."""

    def __init__(self, host: NnHost, max_time: float | None = None,
                 on_expire: Callable[[], None] | None = None,
                 stdout: Callable[[bytes], None] | None = None) -> None:
        """``max_time``: the run's limit in seconds (InvalidArgument unless > 0): past it
        every request in flight is cancelled and every import returns runtime_error;
        ``on_expire`` is called first then (on the deadline's timer thread). ``stdout``:
        where ``stream-stdout`` prints (None: nowhere)."""
        self.host = host
        self._stdout = stdout
        self._stream_graphs: set[int] = set()   # graph handles loaded with stream-stdout
        self._on_expire = on_expire
        self.deadline = RunDeadline(host.default_timeout_ms, max_time, self.expire)
        self._graphs: dict[int, SharedGraph] = {}
        self._contexts: dict[int, _Context] = {}
        self._graph_ids = itertools.count()
        self._context_ids = itertools.count()

    def define(self, linker: Linker) -> None:
        """All twelve imports on ``linker``: a guest importing any subset instantiates."""
        for name, arity in ARITY.items():
            ty = FuncType([ValType.i32()] * arity, [ValType.i32()])
            body = getattr(self, f"_{name}")
            linker.define_func(MODULE, name, ty, _guarded(name, body, self.deadline.check),
                               access_caller=True)

    def expire(self) -> None:
        """The run's time is up (on the deadline's timer thread): close every context, so a
        request in flight stops within one engine step and a guest inside compute comes
        back; GuestNn.close releases them afterwards."""
        if self._on_expire is not None:
            self._on_expire()
        for context in list(self._contexts.values()):
            wasi_nn.finalize_execution_context(self.host.ctx, context.handle)

    def close(self) -> None:
        """Finalize every context and drop every graph the guest still holds."""
        self.deadline.cancel()
        contexts, self._contexts = list(self._contexts.values()), {}
        graphs, self._graphs = list(self._graphs.values()), {}
        for context in contexts:
            wasi_nn.finalize_execution_context(self.host.ctx, context.handle)
            self.host.release(context.graph)
        for graph in graphs:
            self.host.release(graph)

    # -- graphs -------------------------------------------------------------------------------
    def _load(self, caller: Any, builders_ptr: int, builders_len: int, encoding: int,
              target: int, graph_out: int) -> ErrorCode:
        memory = GuestMemory(caller)
        memory.check(graph_out, 4, "graph_out")
        pairs = memory.read_pairs(builders_ptr, builders_len, "builder array")
        if not pairs:
            raise InvalidArgument("the builder array is empty: builder[0] is the model")
        model = memory.read(*pairs[0], "builder[0] (model)")
        config = self._config(memory, *pairs[1]) if len(pairs) > 1 else None
        return self._new_graph(memory, *self._load_graph(model, config, encoding, target),
                               graph_out, config)

    def _load_graph(self, model: bytes, config: bytes | None, encoding: int, target: int
                    ) -> tuple[ErrorCode, SharedGraph | None]:
        if model.startswith(PRELOAD_PREFIX):
            _check_encoding(encoding, target)
            if len(model) - len(PRELOAD_PREFIX) > self.host.max_input_bytes:
                raise TooLarge(f"the preload name is {len(model) - len(PRELOAD_PREFIX)} bytes; "
                               f"this host accepts at most {self.host.max_input_bytes}")
            return self.host.load_name(self._name(model[len(PRELOAD_PREFIX):]), config)
        return self.host.load_bytes(model, config, encoding, target)

    def _load_by_name(self, caller: Any, name_ptr: int, name_len: int, graph_out: int
                      ) -> ErrorCode:
        return self._load_by_name_with_config(caller, name_ptr, name_len, 0, 0, graph_out)

    def _load_by_name_with_config(self, caller: Any, name_ptr: int, name_len: int,
                                  config_ptr: int, config_len: int, graph_out: int) -> ErrorCode:
        memory = GuestMemory(caller)
        memory.check(graph_out, 4, "graph_out")
        name = self._name(memory.read(name_ptr, name_len, "model name",
                                      limit=self.host.max_input_bytes))
        config = self._config(memory, config_ptr, config_len)
        code, graph = self.host.load_name(name, config)
        return self._new_graph(memory, code, graph, graph_out, config)

    def _new_graph(self, memory: GuestMemory, code: ErrorCode, graph: SharedGraph | None,
                   graph_out: int, config: bytes | None) -> ErrorCode:
        if graph is None:
            return code
        handle = next(self._graph_ids)
        self._graphs[handle] = graph
        if stream_stdout_flag(config):
            self._stream_graphs.add(handle)
        memory.write_u32(graph_out, handle, "graph_out")
        return ErrorCode.SUCCESS

    def _unload(self, caller: Any, graph: int) -> ErrorCode:
        self.host.release(self._pop(self._graphs, graph, "graph"))
        return ErrorCode.SUCCESS

    # -- execution contexts -------------------------------------------------------------------
    def _init_execution_context(self, caller: Any, graph: int, ctx_out: int) -> ErrorCode:
        memory = GuestMemory(caller)
        memory.check(ctx_out, 4, "ctx_out")
        shared = self._get(self._graphs, graph, "graph")
        code, handle = wasi_nn.init_execution_context(self.host.ctx, shared.handle)
        if code is not ErrorCode.SUCCESS:
            return code
        self.host.retain(shared)
        guest_handle = next(self._context_ids)
        self._contexts[guest_handle] = _Context(handle, shared, graph in self._stream_graphs)
        memory.write_u32(ctx_out, guest_handle, "ctx_out")
        return ErrorCode.SUCCESS

    def _finalize_execution_context(self, caller: Any, ctx: int) -> ErrorCode:
        context = self._pop(self._contexts, ctx, "execution context")
        code = wasi_nn.finalize_execution_context(self.host.ctx, context.handle)
        self.host.release(context.graph)
        return code

    def _set_input(self, caller: Any, ctx: int, index: int, tensor_ptr: int) -> ErrorCode:
        context = self._get(self._contexts, ctx, "execution context")
        memory = GuestMemory(caller)
        dims, tensor_type, data_ptr, data_len = memory.read_tensor(tensor_ptr)
        data = memory.read(data_ptr, data_len, f"input {index} data",
                           limit=self.host.max_input_bytes)
        if tensor_type not in _values(wasi_nn.TensorType):
            raise InvalidArgument(f"tensor type {tensor_type} is not a witx tensor type (0..5)")
        if dims == [1]:
            dims = [len(data)]  # LlamaEdge and older examples send dims [1] for any prompt
        tensor = wasi_nn.Tensor(dims or None, wasi_nn.TensorType(tensor_type), data)
        code = wasi_nn.set_input(self.host.ctx, context.handle, index, tensor)
        flag = stream_stdout_flag(data) if index == 1 else None
        if code is ErrorCode.SUCCESS and flag is not None:
            context.stream_stdout = flag
        return code

    def _compute(self, caller: Any, ctx: int) -> ErrorCode:
        context, session = self._bounded(ctx)
        if context.stream_stdout and self._stdout is not None \
                and not session.loaded.config.model.embedding:
            return compute_printing(self.host.ctx, context.handle, self._stdout)
        return wasi_nn.compute(self.host.ctx, context.handle)

    def _compute_single(self, caller: Any, ctx: int) -> ErrorCode:
        return wasi_nn.compute_single(self.host.ctx, self._bounded(ctx)[0].handle)

    def _bounded(self, ctx: int) -> tuple[_Context, Any]:
        """The context and its session, the next request's deadline set under the
        operator's (RunDeadline.bound)."""
        context = self._get(self._contexts, ctx, "execution context")
        session = self.host.backend.session(context.handle)
        self.deadline.bound(session)
        return context, session

    def _fini_single(self, caller: Any, ctx: int) -> ErrorCode:
        return wasi_nn.fini_single(self.host.ctx, self._get(self._contexts, ctx, "ctx").handle)

    def _get_output(self, caller: Any, ctx: int, index: int, out_ptr: int, out_max_len: int,
                    written_ptr: int) -> ErrorCode:
        return self._output(wasi_nn.get_output, caller, ctx, index, out_ptr, out_max_len,
                            written_ptr)

    def _get_output_single(self, caller: Any, ctx: int, index: int, out_ptr: int,
                           out_max_len: int, written_ptr: int) -> ErrorCode:
        return self._output(wasi_nn.get_output_single, caller, ctx, index, out_ptr,
                            out_max_len, written_ptr)

    def _output(self, fetch: Callable[..., tuple[ErrorCode, Any]], caller: Any, ctx: int,
                index: int, out_ptr: int, out_max_len: int, written_ptr: int) -> ErrorCode:
        """Copy output ``index`` to [out_ptr, out_ptr + out_max_len) and its size to
        written_ptr; too small: too_large with the size needed written (nothing else), unless
        lenient_output and the whole output fits in guest memory from out_ptr."""
        context = self._get(self._contexts, ctx, "execution context")
        memory = GuestMemory(caller)
        memory.check(written_ptr, 4, "bytes_written")
        memory.check(out_ptr, out_max_len, "output buffer")
        code, data = fetch_output(fetch, self.host.ctx, context.handle, index)
        if code is not ErrorCode.SUCCESS:
            return code
        if len(data) > out_max_len and not (self.host.lenient_output
                                            and memory.fits(out_ptr, len(data))):
            memory.write_u32(written_ptr, len(data), "bytes_written")
            raise TooLarge(f"output {index} needs {len(data)} bytes; the buffer holds "
                           f"{out_max_len}", needed=len(data))
        memory.write(out_ptr, data, "output buffer")
        memory.write_u32(written_ptr, len(data), "bytes_written")
        return ErrorCode.SUCCESS

    # -- helpers ------------------------------------------------------------------------------
    def _name(self, raw: bytes) -> str:
        raw = raw.rstrip(b"\0")  # C guests sometimes count the terminating NUL
        if not raw:
            raise InvalidArgument("the model name is empty")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument("the model name is not UTF-8") from None

    def _config(self, memory: GuestMemory, ptr: int, length: int) -> bytes | None:
        config = memory.read(ptr, length, "config", limit=self.host.max_input_bytes)
        return config.rstrip(b"\0") or None

    @staticmethod
    def _get(table: dict[int, Any], handle: int, what: str) -> Any:
        try:
            return table[handle]
        except KeyError:
            raise NotFound(f"this guest has no {what} {handle}") from None

    @staticmethod
    def _pop(table: dict[int, Any], handle: int, what: str) -> Any:
        try:
            return table.pop(handle)
        except KeyError:
            raise NotFound(f"this guest has no {what} {handle}") from None


def _check_encoding(encoding: int, target: int) -> None:
    """The checks wasi_nn.load makes, for a ``preload:`` builder that never reaches it."""
    if encoding not in _values(wasi_nn.GraphEncoding):
        raise UnsupportedOperation(f"graph encoding {encoding} is not GGML (5 or 6)")
    if target not in _values(wasi_nn.ExecutionTarget):
        raise InvalidArgument(f"execution target {target} is not one of 0..3")


def _values(enum: Any) -> set[int]:
    return {int(member) for member in enum}

