"""Sessions opened, used once and closed leave nothing behind: memory stays flat with the count.

The leak this guards against: every session that sent one request left a fair-queuing tag
(and with it its SequenceState) in the waiting queue for good, 554 bytes a session, because the
virtual time that prunes tags does not move while every session sends one request.
"""
from __future__ import annotations

import gc
import tracemalloc

from wasi_nn_backend import Backend
from wasi_nn_backend.config import BackendSettings, MemoryConfig, RequestParams
from wasi_nn_backend.engine.clock import FakeClock
from wasi_nn_backend.core.slots import SlotPool
from wasi_nn_backend.core.scheduler import Scheduler
from wasi_nn_backend.core.request import Request, SequenceState

PARAMS = RequestParams()


def live_session_states() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is SequenceState)


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


class CoreSessions:
    """The scheduler, queue and slot pool driven as the engine drives them: open a session,
    queue one request, admit it, finish it, close the session (engine._drop_session)."""

    def __init__(self) -> None:
        self.pool = SlotPool(4)
        self.scheduler = Scheduler(n_batch=8, n_ctx=64, pool=self.pool,
                                   settings=BackendSettings(max_concurrent=4),
                                   memory=MemoryConfig(), can_shift=True, clock=FakeClock())
        self.next_id = 0

    def run(self, count: int) -> None:
        scheduler = self.scheduler
        for _ in range(count):
            self.next_id += 1
            session = SequenceState(session_id=self.next_id)
            request = Request(session=session, prompt_tokens=[1, 2, 3], params=PARAMS)
            scheduler.submit(request)
            scheduler.plan()
            assert request in scheduler.running
            scheduler.remove(request)        # finished
            session.closed = True            # closed: as engine._drop_session does
            self.pool.release(session)


def test_100000_core_sessions_leave_memory_flat():
    core = CoreSessions()
    core.run(1_000)  # warm: tables and free lists at their working size
    tracemalloc.start()
    try:
        before = traced_bytes()
        for _ in range(11):
            core.run(9_000)
            # Checked as it goes: a leak also made every admission scan the leaked tags.
            assert live_session_states() < 200, f"sessions kept after {core.next_id}"
        grown = traced_bytes() - before
    finally:
        tracemalloc.stop()
    # The leak kept 554 bytes a session (54 MB here); what may remain is a bounded table.
    assert grown < 64 * 1024, f"{grown} bytes retained by 99,000 closed sessions"
    assert live_session_states() < 200


def test_closed_sessions_are_forgotten_through_the_api(tiny_model_path):
    n = 1_500
    with Backend({"model": {"n_ctx": 64, "n_seq_max": 4}, "logging": {"level": "error"}}) \
            as backend:
        graph = backend.load(tiny_model_path)

        def sessions(count: int) -> None:
            for _ in range(count):
                with graph.session() as session:
                    session.complete("Hello there", temperature=0, max_tokens=1)

        sessions(200)  # warm
        tracemalloc.start()
        try:
            start = traced_bytes()
            sessions(n)
            after_n = traced_bytes()
            sessions(n)
            after_2n = traced_bytes()
        finally:
            tracemalloc.stop()
        states = live_session_states()
    per_session = (after_2n - after_n) / n
    # Flat: the second n sessions keep no more than noise (the leak kept over 500 bytes each).
    assert per_session < 100, (f"{per_session:.0f} bytes a session retained "
                               f"(n: {after_n - start} bytes, 2n: {after_2n - start} bytes)")
    assert states < 100, f"{states} SequenceState objects alive after closing every session"
