"""The idle-cleanup timer of a Backend."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..errors import WasiNnError

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("wasi_nn_backend")


class Janitor:
    """The idle-cleanup timer: a thread that calls backend.cleanup_idle() every quarter of
    idle_timeout_ms (between 50 ms and 1 s of real time); idleness itself is measured on the
    backend's clock."""

    def __init__(self, backend: Backend) -> None:
        settings = backend.config.backend
        self._backend = backend
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
                self._backend.cleanup_idle()
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
