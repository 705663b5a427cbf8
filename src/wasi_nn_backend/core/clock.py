"""Clocks. Deadlines are absolute seconds on an injected clock, so timeout tests never sleep
(engine/clock.py has FakeClock: it is read by engine threads and moved by callers, so it
locks, and core has no threads)."""
from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()
