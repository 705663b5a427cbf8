"""The queue limit shared with callers' threads: core/queue.py's QueueLimit under a lock.

A caller enters the gate on its own thread before posting a request to the engine, so a full
queue is refused at once (Busy) instead of after a trip through the engine's inbox; the engine
thread's Scheduler leaves it. Busy is raised and the warning logged outside the lock (log
handlers may be slow).
"""
from __future__ import annotations

import threading

from ..config import BackendSettings
from ..core.queue import QueueLimit


class QueueGate:
    """``limit``, or a QueueLimit made of the keywords; only its lock-holder touches it."""

    def __init__(self, limit: QueueLimit | None = None, *, reject_at: int = 1, warn_at: int = 0,
                 describe_limit: str = "") -> None:
        if limit is None:
            limit = QueueLimit(reject_at=reject_at, warn_at=warn_at,
                               describe_limit=describe_limit)
        self._limit = limit
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> QueueGate:
        return cls(QueueLimit.from_settings(settings))

    def enter(self) -> None:
        with self._lock:
            entry = self._limit.count_in()
        self._limit.report(entry)

    def leave(self) -> None:
        with self._lock:
            self._limit.leave()

    @property
    def count(self) -> int:
        with self._lock:
            return self._limit.count

    @property
    def peak(self) -> int:
        with self._lock:
            return self._limit.peak

    @property
    def rejected_total(self) -> int:
        with self._lock:
            return self._limit.rejected_total

    @property
    def warnings_total(self) -> int:
        with self._lock:
            return self._limit.warnings_total
