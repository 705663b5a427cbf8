"""The requests of docs/erlang-protocol.md: ``{Id, Op, Args}`` checked, then run on the
Python API: the process's backend table (api.registry, whose handles the function API shares)
and the Backend -> Graph -> Session objects behind a handle. This edge never calls another
edge (the function API's codes are its own wire format, not ours).

Handlers take the checked arguments and return the reply term (without the Id); a failure
raises a WasiNnError whose code becomes the reply's error atom and whose message its text
(port.py and relay.py translate it, at this edge's border).
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

from ...api import Completion, Session, Stream, registry
from ...config import MAX_TIMEOUT_MS
from ...errors import BackendRuntimeError, ErrorCode, InvalidArgument, WasiNnError
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
    """``{error, {Atom, Message}}``. The message stays UTF-8 even when it quotes a path whose
    undecodable bytes became lone surrogates (shown escaped: ``\\udcff``)."""
    text = message.encode("utf-8", "backslashreplace")
    return (ERROR, (atom(code.name.lower()), binary(text)))


def _close_backend(handle: int) -> None:
    """Close a backend the port made, never raising: the port is ending (or the handle is
    gone already, deinitialized by a request meanwhile), and the other backends still close."""
    try:
        registry.close_backend(handle)
    except WasiNnError as error:
        log.info("deinitializing backend %d: %s (%s)", handle, error.message,
                 error.code.name.lower())
    except Exception:
        log.exception("deinitializing backend %d failed unexpectedly", handle)


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
            _close_backend(handle)
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
            _close_backend(handle)
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


def _session(ctx: int, exec_ctx: int) -> Session:
    return registry.backend(ctx).session(exec_ctx)


def _path(path: bytes) -> str:
    """A model path as the file system names it: undecodable bytes become lone surrogates
    (surrogateescape), so any path the VM sends opens the file it names."""
    if not path:
        raise InvalidArgument("the model Path is empty")
    return path.decode("utf-8", "surrogateescape")


def _session_id(session_id: bytes) -> str:
    if not session_id:
        raise InvalidArgument("the session id (SessionId) is empty")
    return session_id.decode("utf-8", "replace")


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
    handle = registry.open_backend(config or None)
    call.backends.add(handle)
    return (OK, handle)


def deinit_backend(call: Call, ctx: int) -> Any:
    registry.close_backend(ctx)
    call.backends.discard(ctx)
    return OK


def load_by_name_with_config(call: Call, ctx: int, path: bytes, config: bytes) -> Any:
    """Backend.load: the graph already serving this file and config, a hot swap into the
    graph loaded last (backend.hot_swap), or a new graph; its handle."""
    target = registry.backend(ctx)  # not_found for an unknown Ctx before any argument's error
    return (OK, target.load(_path(path), config or None).handle)


def init_execution_context(call: Call, ctx: int, session_id: bytes) -> Any:
    """The session named ``session_id`` (history kept), or a new one, on the graph a load
    returned last (invalid_argument when no model is loaded)."""
    target = registry.backend(ctx)
    name = _session_id(session_id)
    return (OK, target.latest_graph().session(name).handle)


def start_chat(ctx: int, exec_ctx: int, prompt: bytes, config: bytes,
               options: Any = None) -> Stream:
    """run_inference / run_inference_stream: the chat turn, submitted (Session.chat_stream;
    the reply has no caller buffer to fit, so it is never generated twice); `cancel` stops
    it. ``options`` (the optional 5th element): the caller's timeout as the turn's deadline
    unless its RuntimeConfigJson sets timeout_ms (chat_options)."""
    timeout_ms = chat_options(options).timeout_ms
    return _session(ctx, exec_ctx).chat_stream(_message(prompt), config or None,
                                               default_timeout_ms=timeout_ms)


@dataclass(frozen=True)
class ChatOptions:
    timeout_ms: int | None = None   # None: the backend's default_task_timeout_ms; 0: none
    usage: bool = False             # run_inference replies {ok, Reply, UsageJson}


def chat_options(term: Any) -> ChatOptions:
    """The optional Options map of run_inference / run_inference_stream: ``timeout`` (ms, or
    ``infinity`` for no deadline) and ``usage`` (true: the reply carries the usage JSON)."""
    if term is None:
        return ChatOptions()
    if not isinstance(term, dict):
        raise InvalidArgument(f"Options must be a map, not {describe(term)}")
    options = {atom_name(key): value for key, value in term.items()}
    unknown = sorted(str(k) for k in options if k not in ("timeout", "usage"))
    if unknown:
        raise InvalidArgument(f"unknown Options keys {unknown}; they are timeout and usage")
    timeout = options.get("timeout")
    if timeout is not None:
        if atom_name(timeout) == "infinity":
            timeout = 0
        elif not is_integer(timeout) or not 0 <= timeout <= MAX_TIMEOUT_MS:
            raise InvalidArgument("Options timeout must be ms in [0, 86400000] or infinity, "
                                  f"not {describe(timeout)}")
    usage = atom_name(options.get("usage", atom("false")))
    if usage not in ("true", "false"):
        raise InvalidArgument("Options usage must be true or false")
    return ChatOptions(timeout, usage == "true")


def reply_text(completion: Completion) -> Any:
    return (OK, binary(_finished(completion).text))


def reply_text_usage(completion: Completion) -> Any:
    done = _finished(completion)
    return (OK, binary(done.text), binary(json.dumps(done.usage())))


def reply_usage(completion: Completion) -> Any:
    return (DONE, binary(json.dumps(_finished(completion).usage())))


def close_execution_context(call: Call, ctx: int, exec_ctx: int) -> Any:
    _session(ctx, exec_ctx).close()
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
    optional: int = 0       # how many of the last params may be left out
    finish_usage: Callable[[Completion], Any] | None = None   # finish when Options usage

    def finisher(self, args: list[Any]) -> Callable[[Completion], Any] | None:
        """The last reply's builder for a request of this op with checked ``args``: with
        Options (the 5th of a generating op's) asking for usage, finish_usage."""
        if self.finish_usage is not None and len(args) > 4 and chat_options(args[4]).usage:
            return self.finish_usage
        return self.finish

    def check(self, args: tuple[Any, ...]) -> list[Any]:
        """The handler's arguments (binaries as bytes); InvalidArgument naming the bad one."""
        shape = "{" + ", ".join(name for name, _ in self.params) + "}"
        if not len(self.params) - self.optional <= len(args) <= len(self.params):
            raise InvalidArgument(f"{self.name} takes {shape}"
                                  + (f" (the last {self.optional} optional)" if self.optional
                                     else "") + f"; got a tuple of {len(args)}")
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
_INFER = (_CTX, _EXEC, ("Prompt", BINARY), ("RuntimeConfigJson", BINARY), ("Options", TERM))
OPS = {op.name: op for op in (
    Op("init_backend", (("ConfigJson", BINARY),), init_backend),
    Op("deinit_backend", (_CTX,), deinit_backend),
    Op("load_by_name_with_config", (_CTX, ("Path", BINARY), ("ConfigJson", BINARY)),
       load_by_name_with_config),
    Op("init_execution_context", (_CTX, ("SessionId", BINARY)), init_execution_context),
    Op("run_inference", _INFER, start_chat, finish=reply_text, optional=1,
       finish_usage=reply_text_usage),
    Op("run_inference_stream", _INFER, start_chat, finish=reply_usage, streams=True,
       optional=1),
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
