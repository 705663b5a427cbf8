"""The port program's loop: frames in on fd 3, replies out on fd 4, a bounded set of threads.

A reader thread reads and checks frames and hands each request on, never waiting for one:
generations go to the engine as streams (relay.py: the scheduler queues them or refuses them
with busy; one forwarder thread relays their output), `cancel` is answered at once, and the
calls that block (init, load, sessions, deinit) run on a pool of CALL_THREADS threads with at
most CALL_BACKLOG waiting. A full pool or queue answers busy. So a slow generation never holds
up another session's request, and a flood costs no thread per request; replies carry the
request's Id and go out in whatever order they finish. The main thread only waits for the end:
EOF on fd 3 (the VM closed the port or died) or a failed write to fd 4. Then every backend
made through the port is deinitialized.
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
from ...logs import PACKAGE_LOGGER
from . import terms
from .frames import MAX_FRAME_BYTES, FrameReader, FrameTooLarge, FrameWriter
from .log_frames import FrameLogHandler
from .ops import Backends, BadRequest, Call, Op, error_term, parse
from .relay import Relay, internal_error
from .workers import HeldBytes, Workers

log = logging.getLogger("wasi_nn_backend.erlang")
IN_FD, OUT_FD = 3, 4   # where open_port(..., [nouse_stdio, {packet, 4}]) puts the pipes
CALL_THREADS, CALL_BACKLOG = 4, 1024     # blocking calls: load, deinit, sessions
START_THREADS, START_BACKLOG = 2, 4096   # chat turns being templated, tokenized, submitted


class Port:
    def __init__(self, in_fd: int = IN_FD, out_fd: int = OUT_FD,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.backends = Backends()
        self._reader = FrameReader(in_fd, max_frame_bytes)
        self._writer = FrameWriter(out_fd, on_broken=self._end)
        self._ended = threading.Event()
        self._status = 0
        # the frames of requests read but not started: as much as one frame may take
        self._held = HeldBytes(max_frame_bytes)
        self._calls = Workers("call", CALL_THREADS, CALL_BACKLOG)
        self._relay = Relay(self._send, Workers("start", START_THREADS, START_BACKLOG),
                            self._held)
        self._call = Call(self.backends, cancel=self._relay.generations.cancel)

    def serve(self) -> int:
        """Answer requests until the VM goes away; deinitialize our backends. Returns the exit
        status: 0, or 1 if reading fd 3 failed other than by EOF."""
        self._relay.forwarder.start()
        reader = threading.Thread(target=self._read_loop, name="erlang-port-reader", daemon=True)
        reader.start()
        self._ended.wait()
        self.backends.close_all()
        self._calls.close()
        self._relay.close()
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
        try:
            if op.finish is not None:
                self._relay.submit(request_id, op, args, len(data))
            elif op.inline:
                self._send(request_id, self._run(op, args))
            else:
                self._queue(request_id, op, args, len(data))
        except Exception as error:  # a bug: answer it, keep reading
            self._send(request_id, internal_error(op, error))

    def _queue(self, request_id: Any, op: Op, args: list[Any], size: int) -> None:
        """Run a blocking call on the pool: busy when the pool's queue, or the bytes held by
        requests not started, are full."""
        def task() -> None:
            self._held.give(size)
            self._send(request_id, self._run(op, args))

        try:
            self._held.holding(size, lambda: self._calls.submit(task))
        except WasiNnError as error:
            self._send(request_id, error_term(error.code, error.message))

    def _run(self, op: Op, args: list[Any]) -> Any:
        try:
            return op.handler(self._call, *args)
        except WasiNnError as error:
            log.info("%s: %s (%s)", op.name, error.message, error.code.name.lower())
            return error_term(error.code, error.message)
        except Exception as error:  # a bug: say so, keep serving
            return internal_error(op, error)

    def notify(self, term: Any) -> bool:
        """A frame that answers no request (a log line)."""
        return self._writer.send(terms.encode(term))

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


def run(*, log_frames: bool = False) -> int:
    """The program: serve on fds 3/4, then leave at once (status 0). ``log_frames``: the
    package's log lines go to the VM as {log, ...} frames (log_frames.py)."""
    if not _fds_ready():
        sys.stderr.write("wasi-nn-backend erlang-port: file descriptors 3 (read) and 4 (write) "
                         "are not open; this is an Erlang port program: open_port("
                         "{spawn_executable, ...}, [{packet, 4}, nouse_stdio, binary, "
                         "exit_status])\n")
        return 2
    # Ctrl-C in an erl shell reaches the whole process group; the VM decides when we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    port = Port()
    if log_frames:
        logging.getLogger(PACKAGE_LOGGER).addHandler(FrameLogHandler(port.notify))
    status = port.serve()
    # Request threads may still be inside llama.cpp calls; interpreter teardown beneath them
    # could crash or hang, and nobody is left to answer: flush and go.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
