"""FakeClock: a clock for tests that moves only when told to. It lives beside the engine, not
in core/clock.py, because it is shared across threads: engine threads read it while callers
(and clocks that tick as they are read) move it, so it takes a lock."""
from __future__ import annotations

import threading


class FakeClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
