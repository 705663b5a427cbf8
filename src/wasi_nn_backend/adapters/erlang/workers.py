"""The port's bounds on work it has read but not finished: a small thread pool with a bounded
queue (Workers), and a byte budget for the frames of requests not started yet (HeldBytes).
Both refuse with Busy when full, so a flood of requests costs neither a thread nor a frame's
memory per request.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from ...errors import BackendRuntimeError, Busy

log = logging.getLogger("wasi_nn_backend.erlang")


class Workers:
    """Up to ``threads`` threads (started when needed) run the submitted tasks in order; at
    most ``backlog`` tasks wait for one, beyond that submit raises Busy."""

    def __init__(self, name: str, threads: int, backlog: int) -> None:
        self.name = name
        self.max_threads = threads
        self.backlog = backlog
        self._cond = threading.Condition(threading.Lock())
        self._tasks: deque[Callable[[], None]] = deque()
        self._threads = 0
        self._idle = 0
        self._closed = False

    def submit(self, task: Callable[[], None], *, force: bool = False) -> None:
        """Queue ``task``; Busy when ``backlog`` tasks already wait (unless ``force``: work
        accepted earlier that must not be refused now)."""
        with self._cond:
            if self._closed:
                raise BackendRuntimeError("the port is shutting down")
            if not force and len(self._tasks) >= self.backlog:
                raise Busy(f"the port is busy: {len(self._tasks)} requests wait for one of its "
                           f"{self.max_threads} {self.name} threads (at most {self.backlog} "
                           f"may wait); retry later")
            self._tasks.append(task)
            # An idle thread woken for an earlier task counts as idle until it runs: start a
            # thread whenever more tasks wait than idle threads can take.
            start = len(self._tasks) > self._idle and self._threads < self.max_threads
            if start:
                self._threads += 1
            if self._idle:
                self._cond.notify()
        if start:
            try:
                threading.Thread(target=self._work, name=f"erlang-{self.name}",
                                 daemon=True).start()
            except RuntimeError as error:  # out of threads: a running one may take it
                with self._cond:
                    self._threads -= 1
                    if self._threads == 0 and task in self._tasks:
                        self._tasks.remove(task)
                        raise Busy(f"the port cannot start a thread: {error}") from None

    def close(self) -> None:
        """Drop the tasks not started; the threads end once their task does."""
        with self._cond:
            self._closed = True
            self._tasks.clear()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._tasks and not self._closed:
                    self._cond.wait()
                self._idle -= 1
                if not self._tasks:
                    self._threads -= 1
                    return
                task = self._tasks.popleft()
            try:
                task()
            except BaseException:  # tasks answer their own errors; this is a bug
                log.exception("an erlang port task failed")


class HeldBytes:
    """The bytes of requests read but not started, at most ``limit`` (one request of any size
    is always taken when nothing else is held)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held = 0

    def take(self, size: int) -> None:
        with self._lock:
            held = self._held
            if held and held + size > self.limit:
                raise Busy(f"the port is busy: the requests waiting to start hold {held} bytes, "
                           f"{size} more would pass its limit of {self.limit}; retry later")
            self._held = held + size

    def holding(self, size: int, accept: Callable[[], None]) -> None:
        """Take ``size`` bytes for a request and call ``accept`` (which queues it); the bytes
        come back at once if ``accept`` raises (refused)."""
        self.take(size)
        try:
            accept()
        except BaseException:
            self.give(size)
            raise

    def give(self, size: int) -> None:
        with self._lock:
            self._held -= size
