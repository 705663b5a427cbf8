"""The requests of docs/erlang-protocol.md: ``{Id, Op, Args}`` checked, then run on the
function API (wasi_nn) and the Session API beneath it.

Handlers take the checked arguments and return the reply term (without the Id); a failure
raises a WasiNnError whose code becomes the reply's error atom and whose message its text.
The generating ops' handlers return the chat turn's Stream instead; relay.py forwards it and
builds the last reply with the op's ``finish``.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ... import wasi_nn
from ...core.request import Completion
from ...errors import BackendRuntimeError, ErrorCode, InvalidArgument
from ...engine.streams import Stream
from ...api.session import Session
from . import terms
from .terms import ERROR, OK, atom, atom_name, binary, binary_value, describe, is_integer

log = logging.getLogger("wasi_nn_backend.erlang")
INTEGER, BINARY, TERM = "an integer", "a binary", "any term"
TOKEN, DONE = atom("token"), atom("done")


class BadRequest(InvalidArgument):
    """A frame that is a term but not a request we can run; ``request_id`` is None (sent as
    ``undefined``) when the Id itself cannot be read."""

    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def error_term(code: ErrorCode, message: str) -> tuple[Any, ...]:
    return (ERROR, (atom(code.name.lower()), binary(message)))


class Backends:
    """The backend handles made through this port: the port deinitializes them when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: set[int] = set()
        self._closed = False

    def add(self, handle: int) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._handles.add(handle)
        if closed:  # made while the port was ending: nobody will use it
            wasi_nn.deinit_backend(handle)
            raise BackendRuntimeError("the port is shutting down")

    def discard(self, handle: int) -> None:
        with self._lock:
            self._handles.discard(handle)

    def close_all(self) -> int:
        with self._lock:
            self._closed = True
            handles, self._handles = sorted(self._handles), set()
        # logged first: closing the last backend also closes the logging it configured
        log.info("deinitializing %d backend(s) made through the port", len(handles))
        for handle in handles:
            wasi_nn.deinit_backend(handle)  # a code, never an exception
        return len(handles)


def request_key(request_id: Any) -> bytes:
    """A request Id as a dict key: its External Term Format encoding (erlang_py's binaries,
    pids, references... are not all hashable, and equal terms encode the same)."""
    try:
        return terms.encode(request_id)
    except Exception:  # an Id erlang_py decoded but cannot encode back: never found again
        return repr(request_id).encode("utf-8", "replace")


@dataclass(frozen=True)
class Call:
    """What a handler may use besides its arguments."""

    backends: Backends
    cancel: Callable[[Any], int] = lambda request_id: 0   # cancel the generations of an Id


def _api(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a wasi_nn function undecorated (functools.wraps keeps it as ``__wrapped__``), so a
    failure raises its WasiNnError, message and all, rather than returning a bare code."""
    return fn.__wrapped__(*args)


def _session(ctx: int, exec_ctx: int) -> Session:
    return wasi_nn.backend_of(ctx).session(exec_ctx)


def _message(prompt: bytes) -> str:
    try:
        return prompt.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"the prompt is not UTF-8: {error}") from None


def _finished(completion: Completion) -> Completion:
    """The completion, or its error (context full, deadline, closed while generating)."""
    error = completion.error()
    if error is not None:
        raise error
    return completion


# -- handlers --------------------------------------------------------------------------------
def init_backend(call: Call, config: bytes) -> Any:
    handle = _api(wasi_nn.init_backend_with_config, config or None)
    call.backends.add(handle)
    return (OK, handle)


def deinit_backend(call: Call, ctx: int) -> Any:
    _api(wasi_nn.deinit_backend, ctx)
    call.backends.discard(ctx)
    return OK


def load_by_name_with_config(call: Call, ctx: int, path: bytes, config: bytes) -> Any:
    return (OK, _api(wasi_nn.load_by_name_with_config, ctx, path, None, config or None))


def init_execution_context(call: Call, ctx: int, session_id: bytes) -> Any:
    return (OK, _api(wasi_nn.init_execution_context_with_session_id, ctx, session_id))


def start_chat(ctx: int, exec_ctx: int, prompt: bytes, config: bytes) -> Stream:
    """run_inference / run_inference_stream: the chat turn, submitted. Session.chat's stream
    (the call wasi_nn.run_inference makes, not run_inference itself: its caller buffer would
    make a too-long reply cost a second generation and a second chat turn); `cancel` stops it."""
    return _session(ctx, exec_ctx).chat_stream(_message(prompt), config or None)


def reply_text(completion: Completion) -> Any:
    return (OK, binary(_finished(completion).text))


def reply_usage(completion: Completion) -> Any:
    return (DONE, binary(json.dumps(_finished(completion).usage())))


def close_execution_context(call: Call, ctx: int, exec_ctx: int) -> Any:
    _api(wasi_nn.close_execution_context, ctx, exec_ctx)
    return OK


def cancel(call: Call, request_id: Any) -> Any:
    """Stop the generation of an earlier request (within one engine step); that request then
    ends with its own error reply. ``ok`` also when it already ended or never was."""
    call.cancel(request_id)
    return OK


@dataclass(frozen=True)
class Op:
    name: str
    params: tuple[tuple[str, str], ...]   # (name in the protocol doc, kind)
    handler: Callable[..., Any]
    finish: Callable[[Completion], Any] | None = None   # set: a generating op (relay.py)
    streams: bool = False   # sends {token, Piece} before its last reply
    inline: bool = False    # quick and never blocking: answered on the reader thread

    def check(self, args: tuple[Any, ...]) -> list[Any]:
        """The handler's arguments (binaries as bytes); InvalidArgument naming the bad one."""
        shape = "{" + ", ".join(name for name, _ in self.params) + "}"
        if len(args) != len(self.params):
            raise InvalidArgument(f"{self.name} takes {shape}; got a tuple of {len(args)}")
        values = []
        for position, ((name, kind), term) in enumerate(zip(self.params, args), 1):
            if kind == TERM:
                value = term
            elif kind == INTEGER:
                value = term if is_integer(term) else None
            else:
                value = binary_value(term)
            if value is None:
                raise InvalidArgument(f"{self.name}: {name} (element {position} of {shape}) "
                                      f"must be {kind}, not {describe(term)}")
            values.append(value)
        return values


_CTX, _EXEC = ("Ctx", INTEGER), ("Exec", INTEGER)
_INFER = (_CTX, _EXEC, ("Prompt", BINARY), ("RuntimeConfigJson", BINARY))
OPS = {op.name: op for op in (
    Op("init_backend", (("ConfigJson", BINARY),), init_backend),
    Op("deinit_backend", (_CTX,), deinit_backend),
    Op("load_by_name_with_config", (_CTX, ("Path", BINARY), ("ConfigJson", BINARY)),
       load_by_name_with_config),
    Op("init_execution_context", (_CTX, ("SessionId", BINARY)), init_execution_context),
    Op("run_inference", _INFER, start_chat, finish=reply_text),
    Op("run_inference_stream", _INFER, start_chat, finish=reply_usage, streams=True),
    Op("close_execution_context", (_CTX, _EXEC), close_execution_context),
    Op("cancel", (("RequestId", TERM),), cancel, inline=True),
)}


def parse(term: Any) -> tuple[Any, Op, list[Any]]:
    """``{Id, Op, Args}`` -> (Id, the Op, its checked arguments); BadRequest otherwise."""
    if not isinstance(term, tuple) or len(term) != 3:
        raise BadRequest(f"a request is {{Id, Op, Args}}; got {describe(term)}"
                         + (f" of {len(term)}" if isinstance(term, tuple) else ""))
    request_id, op_term, args = term
    name = atom_name(op_term)
    op = OPS.get(name) if name is not None else None
    if op is None:
        what = (f"unknown op {name}" if name is not None
                else f"Op must be an atom, not {describe(op_term)}")
        raise BadRequest(f"{what}; the ops are {', '.join(OPS)}", request_id)
    if not isinstance(args, tuple):
        raise BadRequest(f"{op.name}: Args must be a tuple, not {describe(args)}", request_id)
    try:
        return request_id, op, op.check(args)
    except InvalidArgument as error:
        raise BadRequest(error.message, request_id) from None
