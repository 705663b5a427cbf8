"""The port program's loop: frames in on fd 3, one thread per request, replies out on fd 4.

A reader thread reads frames and starts a thread for each request, so a slow generation never
holds up another session's request; replies carry the request's Id and go out in whatever
order they finish. The main thread only waits for the end: EOF on fd 3 (the VM closed the port
or died) or a failed write to fd 4. Then every backend made through the port is deinitialized.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
from typing import Any

from ...errors import ErrorCode, WasiNnError
from . import terms
from .frames import MAX_FRAME_BYTES, FrameReader, FrameTooLarge, FrameWriter
from .ops import (GENERATING, Backends, BadRequest, Call, Generation, Generations, Op,
                  error_term, parse)

log = logging.getLogger("wasi_nn_backend.erlang")
IN_FD, OUT_FD = 3, 4   # where open_port(..., [nouse_stdio, {packet, 4}]) puts the pipes


class Port:
    def __init__(self, in_fd: int = IN_FD, out_fd: int = OUT_FD,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.backends = Backends()
        self.generations = Generations()
        self._reader = FrameReader(in_fd, max_frame_bytes)
        self._writer = FrameWriter(out_fd, on_broken=self._end)
        self._ended = threading.Event()
        self._status = 0

    def serve(self) -> int:
        """Answer requests until the VM goes away; deinitialize our backends. Returns the exit
        status: 0, or 1 if reading fd 3 failed other than by EOF."""
        reader = threading.Thread(target=self._read_loop, name="erlang-port-reader", daemon=True)
        reader.start()
        self._ended.wait()
        self.backends.close_all()
        return self._status

    def _end(self) -> None:
        self._ended.set()

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._reader.read()
                except FrameTooLarge as error:
                    self._send(None, error_term(ErrorCode.TOO_LARGE, str(error)))
                    continue
                if data is None:
                    log.info("EOF on fd %d: the VM closed the port", self._reader.fd)
                    return
                self._dispatch(data)
        except OSError as error:
            log.error("reading fd %d failed: %s", self._reader.fd, error)
            self._status = 1
        except Exception:
            log.exception("the erlang port's reader failed")
            self._status = 1
        finally:
            self._end()

    def _dispatch(self, data: bytes) -> None:
        try:
            request_id, op, args = parse(terms.decode(data, self._reader.max_bytes))
        except terms.NotATerm as error:
            what = ("the frame's term is too large" if isinstance(error, terms.TermTooLarge)
                    else "the frame is not an Erlang term")
            self._send(None, error_term(error.code, f"{what}: {error}"))
            return
        except BadRequest as error:
            self._send(error.request_id, error_term(error.code, error.message))
            return
        # registered here, on the reader thread, so a `cancel` read after this request always
        # finds it, even before its worker thread has started generating
        generation = self.generations.start(request_id) if op.name in GENERATING else None
        worker = threading.Thread(target=self._run, args=(request_id, op, args, generation),
                                  name=f"erlang-{op.name}", daemon=True)
        try:
            worker.start()
        except RuntimeError as error:  # out of threads: refuse this one, keep serving
            if generation is not None:
                self.generations.finish(request_id, generation)
            self._send(request_id, error_term(ErrorCode.BUSY, f"cannot start a thread: {error}"))

    def _run(self, request_id: Any, op: Op, args: list[Any],
             generation: Generation | None = None) -> None:
        call = Call(self.backends, emit=lambda term: self._send(request_id, term),
                    generations=self.generations, generation=generation)
        try:
            reply = op.handler(call, *args)
        except WasiNnError as error:
            log.info("%s: %s (%s)", op.name, error.message, error.code.name.lower())
            reply = error_term(error.code, error.message)
        except Exception as error:  # a bug: say so, keep serving
            log.exception("%s failed unexpectedly", op.name)
            reply = error_term(ErrorCode.UNKNOWN,
                               f"internal error: {type(error).__name__}: {error}")
        finally:
            if generation is not None:
                self.generations.finish(request_id, generation)
        self._send(request_id, reply)

    def _send(self, request_id: Any, reply: Any) -> bool:
        try:
            payload = terms.encode((request_id, reply))
        except Exception as error:  # an Id erlang_py decoded but cannot encode back
            payload = terms.encode((None, error_term(
                ErrorCode.INVALID_ARGUMENT, f"the request's Id cannot be sent back: {error}")))
        return self._writer.send(payload)


def _fds_ready() -> bool:
    """fd 3 open for reading and fd 4 for writing, as open_port leaves them."""
    try:
        modes = [fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE for fd in (IN_FD, OUT_FD)]
    except OSError:
        return False
    return modes[0] in (os.O_RDONLY, os.O_RDWR) and modes[1] in (os.O_WRONLY, os.O_RDWR)


def run() -> int:
    """The program: serve on fds 3/4, then leave at once (status 0)."""
    if not _fds_ready():
        sys.stderr.write("wasi-nn-backend erlang-port: file descriptors 3 (read) and 4 (write) "
                         "are not open; this is an Erlang port program: open_port("
                         "{spawn_executable, ...}, [{packet, 4}, nouse_stdio, binary, "
                         "exit_status])\n")
        return 2
    # Ctrl-C in an erl shell reaches the whole process group; the VM decides when we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = Port().serve()
    # Request threads may still be inside llama.cpp calls; interpreter teardown beneath them
    # could crash or hang, and nobody is left to answer: flush and go.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
