"""The twelve ``wasi_ephemeral_nn`` imports for one guest: guest memory <-> the Python API.

Every import takes i32 parameters and returns an i32 nn_errno in witx numbering. Nothing a
guest passes makes an import raise or trap: a bad pointer is invalid_argument, an unknown
handle not_found, a bug unknown (witx runtime_error), logged. The import bodies raise the API's
WasiNnError; ``_guarded`` is the border that turns them into codes. (wasmtime-py keeps a Python
exception raised in a host function in a process-wide slot, so raising from there could even
surface in another thread's guest.)

Guest handles are u32s counted per guest from 0 and never reused (a HandleTable each); they map
to the host's shared graphs and to backend sessions, so a guest reaches only what it made.
Naming: ``graph_handle`` and ``context_handle`` are the guest's handles; ``session`` is the
backend's handle of the session behind a guest context; ``execution`` is its ExecutionContext.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime import FuncType, Linker, ValType

from ...api import ExecutionContext
from ...api.handles import HandleTable
from ...api.wasi_types import TensorType, check_load_target, tensor_data
from ...errors import ErrorCode, InvalidArgument, TooLarge, WasiNnError, witx_code
from .deadline import RunDeadline
from .host import NnHost, SharedGraph
from .memory import WITX_MISSING_MEMORY, GuestMemory, MissingMemory, u32
from .names import PRELOAD_PREFIX
from .outputs import compute_printing, stream_stdout_flag

log = logging.getLogger("wasi_nn_backend.wasm")

MODULE = "wasi_ephemeral_nn"
ARITY = {
    "load": 5, "load_by_name": 3, "load_by_name_with_config": 5, "init_execution_context": 2,
    "set_input": 3, "compute": 1, "get_output": 5, "compute_single": 1, "get_output_single": 5,
    "fini_single": 1, "unload": 1, "finalize_execution_context": 1,
}
Read = Callable[[ExecutionContext, int], bytes]


@dataclass
class _GuestGraph:
    shared: SharedGraph
    stream_stdout: bool   # loaded with stream-stdout: its contexts start with it on


@dataclass
class _GuestContext:
    session: int          # the backend session's handle (its WASI-NN execution context)
    graph: SharedGraph
    stream_stdout: bool   # WasmEdge's stream-stdout: compute prints each piece (outputs.py)


def _guarded(name: str, fn: Callable[..., None], check: Callable[[], None]
             ) -> Callable[..., int]:
    """An import body (returns nothing, or raises WasiNnError) -> a witx code; ``check`` runs
    first (Timeout once the run's time is up)."""
    @functools.wraps(fn)
    def call(caller: Any, *params: int) -> int:
        try:
            check()
            fn(caller, *(u32(p) for p in params))
        except MissingMemory as error:
            log.info("%s: %s", name, error.message)
            return WITX_MISSING_MEMORY
        except WasiNnError as error:
            log.info("%s: %s (%s)", name, error.message, error.code.name.lower())
            return witx_code(error.code)
        except Exception:
            log.exception("%s failed unexpectedly", name)
            return witx_code(ErrorCode.UNKNOWN)
        return witx_code(ErrorCode.SUCCESS)
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
        self._on_expire = on_expire
        self.deadline = RunDeadline(host.default_timeout_ms, max_time, self.expire)
        self._graphs: HandleTable[_GuestGraph] = HandleTable(
            lambda h: f"this guest has no graph {h}", first=0)
        self._contexts: HandleTable[_GuestContext] = HandleTable(
            lambda h: f"this guest has no execution context {h}", first=0)

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
        for context in self._contexts.values():
            with contextlib.suppress(WasiNnError):
                self._close_session(context)

    def close(self) -> None:
        """Close every context and drop every graph the guest still holds."""
        self.deadline.cancel()
        for context in self._contexts.clear():
            with contextlib.suppress(WasiNnError):
                self._close_session(context)
            self.host.release(context.graph)
        for graph in self._graphs.clear():
            self.host.release(graph.shared)

    # -- graphs -------------------------------------------------------------------------------
    def _load(self, caller: Any, builders_ptr: int, builders_len: int, encoding: int,
              target: int, graph_out: int) -> None:
        memory = GuestMemory(caller)
        memory.check(graph_out, 4, "graph_out")
        pairs = memory.read_pairs(builders_ptr, builders_len, "builder array")
        if not pairs:
            raise InvalidArgument("the builder array is empty: builder[0] is the model")
        model = memory.read(*pairs[0], "builder[0] (model)")
        config = self._config(memory, *pairs[1]) if len(pairs) > 1 else None
        self._new_graph(memory, self._load_graph(model, config, encoding, target), graph_out,
                        config)

    def _load_graph(self, model: bytes, config: bytes | None, encoding: int, target: int
                    ) -> SharedGraph:
        if model.startswith(PRELOAD_PREFIX):
            check_load_target(encoding, target)
            if len(model) - len(PRELOAD_PREFIX) > self.host.max_input_bytes:
                raise TooLarge(f"the preload name is {len(model) - len(PRELOAD_PREFIX)} bytes; "
                               f"this host accepts at most {self.host.max_input_bytes}")
            return self.host.load_name(self._name(model[len(PRELOAD_PREFIX):]), config)
        return self.host.load_bytes(model, config, encoding, target)

    def _load_by_name(self, caller: Any, name_ptr: int, name_len: int, graph_out: int) -> None:
        self._load_by_name_with_config(caller, name_ptr, name_len, 0, 0, graph_out)

    def _load_by_name_with_config(self, caller: Any, name_ptr: int, name_len: int,
                                  config_ptr: int, config_len: int, graph_out: int) -> None:
        memory = GuestMemory(caller)
        memory.check(graph_out, 4, "graph_out")
        name = self._name(memory.read(name_ptr, name_len, "model name",
                                      limit=self.host.max_input_bytes))
        config = self._config(memory, config_ptr, config_len)
        self._new_graph(memory, self.host.load_name(name, config), graph_out, config)

    def _new_graph(self, memory: GuestMemory, shared: SharedGraph, graph_out: int,
                   config: bytes | None) -> None:
        graph_handle = self._graphs.add(_GuestGraph(shared, bool(stream_stdout_flag(config))))
        memory.write_u32(graph_out, graph_handle, "graph_out")

    def _unload(self, caller: Any, graph_handle: int) -> None:
        self.host.release(self._graphs.pop(graph_handle).shared)

    # -- execution contexts -------------------------------------------------------------------
    def _init_execution_context(self, caller: Any, graph_handle: int, context_out: int
                                ) -> None:
        memory = GuestMemory(caller)
        memory.check(context_out, 4, "context_out")
        graph = self._graphs.get(graph_handle)
        session = self.host.open_session(graph.shared)
        context_handle = self._contexts.add(
            _GuestContext(session.handle, graph.shared, graph.stream_stdout))
        memory.write_u32(context_out, context_handle, "context_out")

    def _finalize_execution_context(self, caller: Any, context_handle: int) -> None:
        context = self._contexts.pop(context_handle)
        try:
            self._close_session(context)
        finally:
            self.host.release(context.graph)

    def _set_input(self, caller: Any, context_handle: int, index: int, tensor_ptr: int
                   ) -> None:
        context = self._contexts.get(context_handle)
        memory = GuestMemory(caller)
        dims, tensor_type, data_ptr, data_len = memory.read_tensor(tensor_ptr)
        data = memory.read(data_ptr, data_len, f"input {index} data",
                           limit=self.host.max_input_bytes)
        if tensor_type not in tuple(TensorType):
            raise InvalidArgument(f"tensor type {tensor_type} is not a witx tensor type (0..5)")
        if dims == [1]:
            dims = [len(data)]  # LlamaEdge and older examples send dims [1] for any prompt
        execution = self._execution(context)
        data = tensor_data(dims, tensor_type, data)
        execution.set_input(index, data)
        flag = stream_stdout_flag(data) if index == 1 else None
        if flag is not None:
            context.stream_stdout = flag

    def _compute(self, caller: Any, context_handle: int) -> None:
        context, execution = self._bounded(context_handle)
        if context.stream_stdout and self._stdout is not None \
                and not execution.session.loaded.config.model.embedding:
            compute_printing(execution, self._stdout)
        else:
            execution.compute()

    def _compute_single(self, caller: Any, context_handle: int) -> None:
        self._bounded(context_handle)[1].compute_single()

    def _fini_single(self, caller: Any, context_handle: int) -> None:
        self._execution(self._contexts.get(context_handle)).fini_single()

    def _get_output(self, caller: Any, context_handle: int, index: int, out_ptr: int,
                    out_max_len: int, written_ptr: int) -> None:
        self._output(ExecutionContext.output, caller, context_handle, index, out_ptr,
                     out_max_len, written_ptr)

    def _get_output_single(self, caller: Any, context_handle: int, index: int, out_ptr: int,
                           out_max_len: int, written_ptr: int) -> None:
        self._output(ExecutionContext.output_single, caller, context_handle, index, out_ptr,
                     out_max_len, written_ptr)

    def _output(self, read: Read, caller: Any, context_handle: int, index: int, out_ptr: int,
                out_max_len: int, written_ptr: int) -> None:
        """Copy output ``index`` to [out_ptr, out_ptr + out_max_len) and its size to
        written_ptr; too small: too_large with the size needed written (nothing else), unless
        lenient_output and the whole output fits in guest memory from out_ptr."""
        context = self._contexts.get(context_handle)
        memory = GuestMemory(caller)
        memory.check(written_ptr, 4, "bytes_written")
        memory.check(out_ptr, out_max_len, "output buffer")
        data = read(self._execution(context), index)
        if len(data) > out_max_len and not (self.host.lenient_output
                                            and memory.fits(out_ptr, len(data))):
            memory.write_u32(written_ptr, len(data), "bytes_written")
            raise TooLarge(f"output {index} needs {len(data)} bytes; the buffer holds "
                           f"{out_max_len}", needed=len(data))
        memory.write(out_ptr, data, "output buffer")
        memory.write_u32(written_ptr, len(data), "bytes_written")

    # -- helpers ------------------------------------------------------------------------------
    def _execution(self, context: _GuestContext) -> ExecutionContext:
        """The backend's execution context behind a guest context (NotFound once closed,
        evicted, or the host closed)."""
        return self.host.serving().context(context.session)

    def _bounded(self, context_handle: int) -> tuple[_GuestContext, ExecutionContext]:
        """The guest context and its execution context, the next request's deadline set
        under the operator's (RunDeadline.bound)."""
        context = self._contexts.get(context_handle)
        execution = self._execution(context)
        self.deadline.bound(execution.session)
        return context, execution

    def _close_session(self, context: _GuestContext) -> None:
        self.host.serving().session(context.session).close()

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
