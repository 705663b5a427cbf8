"""Session cleanup for a Backend: which sessions to close (idle past idle_timeout_ms; the least
recently used at max_sessions) and the timer that closes idle ones."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..config import BackendSettings
from ..errors import BackendRuntimeError, WasiNnError

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("wasi_nn_backend")


def idle_sessions(sessions: Sequence[Session], settings: BackendSettings, now: float
                  ) -> list[Session]:
    """Sessions idle longer than idle_timeout_ms (none without auto_cleanup)."""
    if not settings.auto_cleanup:
        return []
    idle = [s for s in sessions if not s.running
            and (now - s.last_activity) * 1000 > settings.idle_timeout_ms]
    for session in idle:
        log.info("closing session %d: idle for over %d ms", session.handle,
                 settings.idle_timeout_ms)
    return idle


def lru_victim(sessions: Sequence[Session], settings: BackendSettings) -> Session | None:
    """At max_sessions, the least recently used session not running (auto_cleanup); without
    auto_cleanup, or with every session running, the limit is an error."""
    if len(sessions) < settings.max_sessions:
        return None
    idle = [s for s in sessions if not s.running]
    if not settings.auto_cleanup or not idle:
        raise BackendRuntimeError(f"session limit reached (max_sessions={settings.max_sessions})")
    victim = min(idle, key=lambda s: s.last_activity)
    log.info("closing session %d: least recently used at max_sessions", victim.handle)
    return victim


class Janitor:
    """The idle-cleanup timer: a thread that calls ``cleanup`` (Backend.cleanup_idle) every
    quarter of idle_timeout_ms (between 50 ms and 1 s of real time); idleness itself is
    measured on the backend's clock. It runs only with auto_cleanup."""

    def __init__(self, settings: BackendSettings, cleanup: Callable[[], Any]) -> None:
        self._cleanup = cleanup
        self._interval = min(max(settings.idle_timeout_ms / 4000, 0.05), 1.0)
        self._stopped = threading.Event()
        self._cond = threading.Condition()
        self._passes = 0
        self._thread = threading.Thread(target=self._run, name="wasi-nn-idle-cleanup",
                                        daemon=True)
        if settings.auto_cleanup:
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._cleanup()
            except WasiNnError:
                pass  # closed meanwhile
            except Exception:
                log.exception("idle cleanup failed")
            with self._cond:
                self._passes += 1
                self._cond.notify_all()

    def wait_pass(self, timeout: float) -> bool:
        with self._cond:
            target = self._passes + 1
            return self._cond.wait_for(lambda: self._passes >= target, timeout)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
