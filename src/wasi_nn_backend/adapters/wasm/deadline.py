"""The operator's time limits for one guest run, which the guest can tighten but never lift.

Two limits bind a guest: the host backend's ``default_task_timeout_ms`` (per request) and the
run's ``max_time`` (the whole run, run-wasm --max-time). A guest's metadata ``timeout_ms``
(0 = none, or more than the operator's) and a guest's load config (``backend``
``default_task_timeout_ms``) only ever lower them: before each generation starts, the
context's ``timeout_ms`` becomes the smallest of the guest's deadline, the operator's and the
time the run has left. When the run's time is up, ``RunDeadline`` calls ``on_expire`` once (on
a timer thread): the guest's requests are cancelled there, while epoch interruption stops its
wasm code.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import InvalidArgument, Timeout

if TYPE_CHECKING:
    from ...api.session import Session


def max_time_limit(seconds: float | None) -> float | None:
    """``seconds`` as a run's limit: None for none (None or inf); InvalidArgument unless > 0."""
    if seconds is not None and not seconds > 0:   # NaN included
        raise InvalidArgument(f"max_time must be a positive number of seconds, not {seconds}")
    return None if seconds is None or math.isinf(seconds) else float(seconds)


class RunDeadline:
    def __init__(self, operator_ms: int, max_time: float | None,
                 on_expire: Callable[[], None] | None = None) -> None:
        """``operator_ms``: the backend's default_task_timeout_ms (0 = none); ``max_time``:
        seconds the run may take (None or inf = no limit; InvalidArgument unless > 0).
        ``on_expire`` runs once on a timer thread when max_time has passed."""
        self.operator_ms = operator_ms
        self.max_time = max_time_limit(max_time)
        self._end = None if self.max_time is None else time.monotonic() + self.max_time
        self._expired = threading.Event()
        self._timer: threading.Timer | None = None
        if self.max_time is not None:
            self._timer = threading.Timer(self.max_time, self._expire, (on_expire,))
            self._timer.name = "wasm-run-deadline"
            self._timer.daemon = True
            self._timer.start()

    @property
    def expired(self) -> bool:
        return self._expired.is_set() or (self._end is not None
                                          and time.monotonic() >= self._end)

    def check(self) -> None:
        """Timeout once the run's time is up: a guest starts nothing after that."""
        if self.expired:
            raise Timeout(f"the guest's max_time ({self.max_time} s) has passed")

    def ceiling_ms(self) -> int:
        """The operator's deadline for a request starting now, in ms (0 = none)."""
        self.check()
        limits = [self.operator_ms] if self.operator_ms > 0 else []
        if self._end is not None:
            limits.append(max(1, math.ceil((self._end - time.monotonic()) * 1000)))
        return min(limits) if limits else 0

    def bound(self, session: Session) -> None:
        """Set the session's timeout_ms for its next request to the guest's deadline (its
        metadata's, else its graph's default) under the operator's ceiling."""
        ceiling = self.ceiling_ms()
        params = session.context_params
        wanted = params.timeout_ms
        if wanted is None:
            wanted = session.loaded.config.backend.default_task_timeout_ms
        limit = min(wanted, ceiling) if wanted and ceiling else (wanted or ceiling)
        if limit != params.timeout_ms:
            session.context_params = params.model_copy(update={"timeout_ms": limit})

    def cancel(self) -> None:
        """The run ended: no on_expire after this returns (one already running is waited
        for)."""
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
            self._timer.join()

    def _expire(self, on_expire: Callable[[], None] | None) -> None:
        self._expired.set()
        if on_expire is not None:
            on_expire()
