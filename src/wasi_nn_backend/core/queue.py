"""The waiting queue: who is admitted next, and the limit that refuses requests when it is full.

Nothing here is thread-safe: the Scheduler uses WaitingQueue and a QueueLimit on the engine
thread. Callers count themselves in on their own threads (a full queue is refused at once
instead of after a trip through the engine's inbox), so the engine gives its Scheduler a
QueueLimit under a lock (engine/gate.py's QueueGate); core itself has no threads.
"""
from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..config import BackendSettings
from ..errors import Busy
from .request import Request, SequenceState

log = logging.getLogger("wasi_nn_backend.scheduler")

PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}


class Gate(Protocol):
    """What the Scheduler needs of its queue limit: a QueueLimit, or engine/gate.py's
    QueueGate (the same under a lock)."""

    def enter(self) -> None: ...
    def leave(self) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def peak(self) -> int: ...
    @property
    def rejected_total(self) -> int: ...
    @property
    def warnings_total(self) -> int: ...


@dataclass(frozen=True)
class Entry:
    """What one count_in() decided: refused, or counted in (and whether to warn)."""

    refused: bool
    count: int
    warn: bool


class QueueLimit:
    """Counts requests accepted but not yet admitted, and refuses new ones past the limit.

    enter() counts a request in or raises Busy; leave() counts one out. A warning is logged
    (and counted) when the count reaches ``warn_at``; it is re-armed only once the count falls
    below ``warn_at - warn_at // 10``, so a queue hovering at the threshold logs once, not on
    every request. ``warn_at`` 0 turns the warning off. enter() is count_in() then report():
    a caller that locks around the count can log and raise outside its lock.
    """

    def __init__(self, *, reject_at: int, warn_at: int = 0,
                 describe_limit: str = "") -> None:
        if reject_at < 1:
            raise ValueError("reject_at must be at least 1")
        self.reject_at = reject_at
        self.warn_at = warn_at
        self._rearm_below = warn_at - warn_at // 10
        self._describe_limit = describe_limit or f"limit {reject_at}"
        self._count = 0
        self._peak = 0
        self._armed = True
        self._rejected_total = 0
        self._warnings_total = 0

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> QueueLimit:
        reject_at = min(settings.queue_size, settings.queue_reject_threshold)
        return cls(reject_at=reject_at, warn_at=settings.queue_warning_threshold,
                   describe_limit=f"limit {reject_at}: queue_reject_threshold="
                                  f"{settings.queue_reject_threshold}, queue_size="
                                  f"{settings.queue_size}")

    def enter(self) -> None:
        """Count one more waiting request, or raise Busy when ``reject_at`` already wait."""
        self.report(self.count_in())

    def count_in(self) -> Entry:
        """The counting half of enter(): refuse, or count in (and maybe disarm the warning)."""
        count = self._count
        if count >= self.reject_at:
            self._rejected_total += 1
            return Entry(True, count, False)
        count = self._count = count + 1
        self._peak = max(self._peak, count)
        warn = bool(self.warn_at) and self._armed and count >= self.warn_at
        if warn:
            self._armed = False
            self._warnings_total += 1
        return Entry(False, count, warn)

    def report(self, entry: Entry) -> None:
        """The telling half of enter(): raise Busy for a refusal, log a warning."""
        if entry.refused:
            log.debug("request refused: %d waiting (%s)", entry.count, self._describe_limit)
            raise Busy(f"the request queue is full: {entry.count} requests are waiting for "
                       f"admission ({self._describe_limit}); retry later")
        if entry.warn:
            log.warning("request queue has %d waiting requests (queue_warning_threshold=%d; "
                        "new requests are refused at %d)", entry.count, self.warn_at,
                        self.reject_at)

    def leave(self) -> None:
        """Count one waiting request out. A leave() without a matching enter() (a request
        submitted to the Scheduler directly, as unit tests do) is ignored: never below 0."""
        if self._count > 0:
            self._count -= 1
        if self._count < self._rearm_below:
            self._armed = True

    @property
    def count(self) -> int:
        return self._count

    @property
    def peak(self) -> int:
        return self._peak

    @property
    def rejected_total(self) -> int:
        return self._rejected_total

    @property
    def warnings_total(self) -> int:
        return self._warnings_total


class WaitingQueue:
    """Requests waiting for admission; engine thread only.

    Each session's requests stay in its own FIFO, so only a session's oldest waiting request
    can be admitted (its order is kept). Among those heads the order is:
      1. priority (urgent > high > normal > low) when ``priority`` is on;
      2. when ``fair`` is on, start-time fair queuing with unit cost per request: a request's
         tag is max(the level's virtual time, its session's previous tag + 1), and the virtual
         time moves to the tag of each admitted request. A session that queues 20 requests
         gets tags 0..19; a session arriving later gets the current virtual time, so it is
         served right after the request being served now, not after the 20;
      3. submission order.
    Iteration is in submission order.
    """

    def __init__(self, *, priority: bool, fair: bool, track_deadlines: bool) -> None:
        self.priority = priority
        self.fair = fair
        self.track_deadlines = track_deadlines
        self._seq = itertools.count()
        self._keys: dict[Request, tuple[int, int, int]] = {}  # (-rank, tag, seq), in order
        self._by_session: dict[int, deque[Request]] = {}      # id(session) -> its FIFO
        # Fair queuing state per priority rank: virtual time, and each session's next tag
        # (keyed by the session object itself, so a closed session's id() reused by a new
        # one cannot inherit its tag). Pruned when the table doubles (_prune_tags).
        self._vtime = [0] * len(PRIORITY_RANK)
        self._next_tag: dict[tuple[SequenceState, int], int] = {}
        self._prune_at = 64
        self._deadlines: list[tuple[float, int, Request]] = []  # heap; stale entries skipped

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._keys))

    def __contains__(self, request: object) -> bool:
        return request in self._keys

    def has_waiting(self, session: SequenceState) -> bool:
        """A request of ``session`` is waiting."""
        return id(session) in self._by_session

    def push(self, request: Request) -> None:
        rank = PRIORITY_RANK[request.priority] if self.priority else 0
        seq = next(self._seq)
        tag = 0
        if self.fair:
            slot = (request.session, rank)
            tag = max(self._vtime[rank], self._next_tag.get(slot, 0))
            self._next_tag[slot] = tag + 1
        self._keys[request] = (-rank, tag, seq)
        self._by_session.setdefault(id(request.session), deque()).append(request)
        if self.track_deadlines and request.deadline is not None:
            heapq.heappush(self._deadlines, (request.deadline, seq, request))
            if len(self._deadlines) > 2 * len(self._keys) + 64:
                self._deadlines = [e for e in self._deadlines if e[2] in self._keys]
                heapq.heapify(self._deadlines)

    def remove(self, request: Request, *, served: bool = False) -> bool:
        """Take ``request`` out; False if it was not waiting. ``served``: it is admitted now
        (moves the fair-queuing virtual time)."""
        key = self._keys.pop(request, None)
        if key is None:
            return False
        session_id = id(request.session)
        fifo = self._by_session[session_id]
        if fifo[0] is request:
            fifo.popleft()
        else:
            fifo.remove(request)
        if not fifo:
            del self._by_session[session_id]
        if not self._keys:
            self._deadlines.clear()  # every entry is stale: none may keep a request alive
        if served and self.fair:
            rank = -key[0]
            self._vtime[rank] = max(self._vtime[rank], key[1])
        if self.fair and len(self._next_tag) > self._prune_at:
            self._prune_tags()
        return True

    def admission_order(self, eligible: Callable[[SequenceState], bool]) -> Iterator[Request]:
        """Session heads in admission order, for sessions where ``eligible(session)``.

        The consumer removes (served=True) the ones it admits. When it removes one and the
        session is still eligible (its prompt failed, say), that session's next request joins
        the order. O(sessions waiting) to start, O(log n) per request yielded.
        """
        heap = [(self._keys[fifo[0]], fifo[0]) for fifo in self._by_session.values()
                if eligible(fifo[0].session)]
        heapq.heapify(heap)  # keys are unique (seq), so requests are never compared
        while heap:
            _, request = heapq.heappop(heap)
            yield request
            if request in self._keys:
                continue  # passed over
            fifo = self._by_session.get(id(request.session))
            if fifo and eligible(request.session):
                heapq.heappush(heap, (self._keys[fifo[0]], fifo[0]))

    def pop_expired(self, now: float) -> list[Request]:
        """Remove and return the waiting requests whose deadline is <= now, earliest first
        (only when ``track_deadlines``)."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            request = heapq.heappop(self._deadlines)[2]
            if self.remove(request):
                expired.append(request)
        return expired

    def _prune_tags(self) -> None:
        """Drop the tags that can no longer matter: a closed session's (it sends nothing
        more), and one at or below its level's virtual time (it gives the same start tag as
        no tag at all). A session that sends one request and closes leaves a tag one above
        the virtual time, which does not move while every session sends one: only the first
        rule frees it. The next prune comes when the table has doubled (amortized O(1))."""
        self._next_tag = {slot: tag for slot, tag in self._next_tag.items()
                          if not slot[0].closed and tag > self._vtime[slot[1]]}
        self._prune_at = 2 * len(self._next_tag) + 64
