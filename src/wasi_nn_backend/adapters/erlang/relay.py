"""Generations over the port without a thread each: run_inference / run_inference_stream go to
the engine as Streams (its scheduler queues them, or refuses them with busy past queue_size),
and one forwarder thread relays what they produce.

A session runs one chat turn at a time (each turn builds on the last), so a request for a
session that is still generating waits here, in that session's lane, without a thread; the
lanes of a backend hold at most its queue limit (min(queue_size, queue_reject_threshold))
waiting requests, beyond that busy. The head of a lane is started on a small pool (rendering
the chat template and tokenizing take time); when it ends, the next one starts.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ...api import EndOfStream, ReadySet, Stream, registry
from ...errors import Busy, ErrorCode, WasiNnError
from .ops import TOKEN, Op, error_term, request_key
from .terms import binary
from .workers import HeldBytes, Workers

log = logging.getLogger("wasi_nn_backend.erlang")
Send = Callable[[Any, Any], bool]


class Job:
    """One generation request, from the reader to its last reply."""

    def __init__(self, relay: Relay, request_id: Any, op: Op, args: list[Any], size: int
                 ) -> None:
        self.relay, self.request_id, self.op, self.size = relay, request_id, op, size
        self.args: list[Any] | None = args   # dropped once started (the prompt can be big)
        self.key = (args[0], args[1])        # (Ctx, Exec): the session's lane
        self.started = False                 # begin() ran: it was its lane's head
        self.stream: Stream | None = None
        self.finish = op.finish              # the last reply's builder (Options may change it)
        self._lock = threading.Lock()
        self._cancelled = False
        self._ended = False

    def cancel(self) -> None:
        """The `cancel` op: stop the stream, or drop the request if it is still waiting."""
        with self._lock:
            self._cancelled = True
            stream = self.stream
        if stream is not None:
            stream.cancel()  # a no-op once it is done
        else:
            self.relay.drop_waiting(self)

    def begin(self) -> None:
        """On a start thread: submit the chat turn and have the forwarder hear its stream."""
        self.relay.held.give(self.size)
        args, self.args, self.started = self.args, None, True
        if self._cancelled:
            return self.end(error_term(ErrorCode.NOT_FOUND, "the request was cancelled "
                                                            "before it started"))
        try:
            self.finish = self.op.finisher(args)
            stream = self.op.handler(*args)
        except WasiNnError as error:
            return self.end(error_term(error.code, error.message))
        except Exception as error:
            return self.end(internal_error(self.op, error))
        with self._lock:
            self.stream = stream
            cancelled = self._cancelled
        if cancelled:
            stream.cancel()
        stream.on_change(lambda: self.relay.forwarder.ready(self))

    def pump(self) -> None:
        """On the forwarder thread: send what the stream has; its last reply once it ends."""
        stream = self.stream
        if self._ended or stream is None:
            return
        try:
            if self.op.streams and not self._relay_pieces(stream):
                return
            if not stream.done:
                return
            reply = self.finish(stream.result())
        except WasiNnError as error:
            log.info("%s: %s (%s)", self.op.name, error.message, error.code.name.lower())
            reply = error_term(error.code, error.message)
        except Exception as error:
            reply = internal_error(self.op, error)
        self.end(reply)

    def _relay_pieces(self, stream: Stream) -> bool:
        """Send the pieces there are as {token, Piece}; whether the stream has ended (the
        caller reads how: stream.result() gives the completion or raises the error)."""
        while True:
            try:
                piece = stream.try_get()
            except EndOfStream:
                return True
            if piece is None:
                return False
            if not self.relay.send(self.request_id, (TOKEN, binary(piece))):
                stream.cancel()  # the VM is gone: stop generating for nobody

    def end(self, reply: Any) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self.relay.send(self.request_id, reply)
        self.relay.finished(self)


def internal_error(op: Op, error: Exception) -> Any:
    log.error("%s failed unexpectedly", op.name, exc_info=error)
    return error_term(ErrorCode.UNKNOWN, f"internal error: {type(error).__name__}: {error}")


class Generations:
    """The generation requests not ended yet, by request Id (a thread-safe map), for `cancel`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[bytes, list[Job]] = {}

    def add(self, job: Job) -> None:
        with self._lock:
            self._running.setdefault(request_key(job.request_id), []).append(job)

    def discard(self, job: Job) -> None:
        key = request_key(job.request_id)
        with self._lock:
            jobs = self._running.get(key, [])
            if job in jobs:
                jobs.remove(job)
            if not jobs:
                self._running.pop(key, None)

    def cancel(self, request_id: Any) -> int:
        """Cancel every generation with this Id; how many there were."""
        with self._lock:
            jobs = list(self._running.get(request_key(request_id), []))
        for job in jobs:
            job.cancel()
        return len(jobs)


class Forwarder:
    """One thread relaying the streams that have something new (their on_change callbacks,
    on the engine threads, only mark them ready)."""

    def __init__(self) -> None:
        self._ready: ReadySet[Job] = ReadySet()

    def start(self) -> None:
        threading.Thread(target=self._run, name="erlang-forwarder", daemon=True).start()

    def ready(self, job: Job) -> None:
        self._ready.mark(job)

    def close(self) -> None:
        self._ready.close()

    def _run(self) -> None:
        while (jobs := self._ready.take()) is not None:
            for job in jobs:
                try:
                    job.pump()
                except Exception:  # pump answers its own errors: this is a bug; keep relaying
                    log.exception("relaying %s failed", job.op.name)


class Relay:
    def __init__(self, send: Send, starts: Workers, held: HeldBytes) -> None:
        self.send, self.starts, self.held = send, starts, held
        self.forwarder = Forwarder()
        self.generations = Generations()
        self._lock = threading.Lock()
        self._lanes: dict[tuple[Any, Any], deque[Job]] = {}   # waiting jobs; the key: a head
        self._waiting: dict[Any, int] = {}                      # Ctx -> jobs in its lanes

    def submit(self, request_id: Any, op: Op, args: list[Any], size: int) -> None:
        """On the reader thread: start the request, queue it behind its session's earlier
        one, or answer busy / not_found at once."""
        job = Job(self, request_id, op, args, size)
        self.generations.add(job)  # now, so a `cancel` read after this always finds it
        try:
            self.held.holding(size, lambda: self._enter(job))
        except WasiNnError as error:
            self.send(request_id, error_term(error.code, error.message))
            self.generations.discard(job)

    def _enter(self, job: Job) -> None:
        ctx = job.key[0]
        settings = registry.backend(ctx).config.backend  # not_found for an unknown Ctx
        limit = min(settings.queue_size, settings.queue_reject_threshold)
        with self._lock:
            lane = self._lanes.get(job.key)
            if lane is not None:
                waiting = self._waiting.get(ctx, 0)
                if waiting >= limit:
                    raise Busy(f"the request queue is full: {waiting} requests wait for their "
                               f"session's earlier requests on backend {ctx} (limit {limit}: "
                               f"queue_reject_threshold={settings.queue_reject_threshold}, "
                               f"queue_size={settings.queue_size}); retry later")
                lane.append(job)
                self._waiting[ctx] = waiting + 1
                return
            self._lanes[job.key] = deque()
        try:
            self.starts.submit(job.begin)
        except BaseException:
            self._leave(job)
            raise

    def drop_waiting(self, job: Job) -> None:
        """A cancelled job still waiting in its lane ends now."""
        with self._lock:
            lane = self._lanes.get(job.key)
            if lane is None or job not in lane:
                return  # started meanwhile: begin() sees the cancel
            lane.remove(job)
            self._count_out(job.key[0])
        self.held.give(job.size)
        job.end(error_term(ErrorCode.NOT_FOUND, "the request was cancelled before it started"))

    def finished(self, job: Job) -> None:
        self.generations.discard(job)
        if job.started:  # not dropped while waiting: the next of its session may start
            self._leave(job)

    def _leave(self, head: Job) -> None:
        """The head of a lane ended: start the next job of that session, if any."""
        while True:
            with self._lock:
                lane = self._lanes[head.key]
                if not lane:
                    del self._lanes[head.key]
                    return
                following = lane.popleft()
                self._count_out(head.key[0])
            try:
                self.starts.submit(following.begin, force=True)
                return
            except WasiNnError as error:  # the port is ending
                self.held.give(following.size)
                self.send(following.request_id, error_term(error.code, error.message))
                self.generations.discard(following)

    def _count_out(self, ctx: Any) -> None:
        """One job fewer waits in the lanes of backend ``ctx`` (under self._lock)."""
        left = self._waiting[ctx] - 1
        if left:
            self._waiting[ctx] = left
        else:
            del self._waiting[ctx]

    def close(self) -> None:
        """The port ends: nothing more is started or relayed."""
        self.starts.close()
        self.forwarder.close()
