"""The waiting queue: the Busy gate, warnings, priorities, fairness, expiry and stats."""
from __future__ import annotations

import logging
import threading

import pytest

from wasi_nn_backend.config import BackendSettings, MemoryConfig, RequestParams
from wasi_nn_backend.engine.clock import FakeClock
from wasi_nn_backend.core.slots import SlotPool
from wasi_nn_backend.engine.gate import QueueGate
from wasi_nn_backend.core.scheduler import Scheduler, SchedulerStats
from wasi_nn_backend.core.request import Request, RequestState, SequenceState
from wasi_nn_backend.errors import Busy, ErrorCode, PromptTooLong

LOGGER = "wasi_nn_backend.scheduler"


def make(n_slots=64, clock=None, **settings):
    settings.setdefault("max_concurrent", 1)
    return Scheduler(n_batch=8, n_ctx=64, pool=SlotPool(n_slots),
                     settings=BackendSettings(**settings), memory=MemoryConfig(),
                     can_shift=True, clock=clock or FakeClock())


def req(session, priority="normal", n=2, deadline=None):
    return Request(session=session, prompt_tokens=list(range(1, n + 1)),
                   params=RequestParams(priority=priority), deadline=deadline)


def drain(s):
    """Plan and finish at once until nothing is left; the requests in admission order."""
    order = []
    while s.has_work:
        before = list(s.running)
        s.plan()
        new = [r for r in s.running if r not in before]
        assert new or s.running, "nothing admitted and nothing running"
        order.extend(new)
        for r in list(s.running):
            s.remove(r)
    return order


# -- the gate ----------------------------------------------------------------------------------

def test_gate_rejects_at_the_threshold_and_accepts_after_leave():
    gate = make(queue_reject_threshold=3, queue_warning_threshold=0).gate
    for _ in range(3):
        gate.enter()
    with pytest.raises(Busy) as caught:
        gate.enter()
    message = str(caught.value)
    assert "3 requests are waiting" in message and "queue_reject_threshold=3" in message
    assert "queue_size=500" in message
    assert caught.value.code is ErrorCode.BUSY
    assert gate.count == 3 and gate.rejected_total == 1
    gate.leave()
    gate.enter()  # room again
    assert gate.count == 3 and gate.rejected_total == 1


def test_queue_size_caps_the_reject_threshold():
    gate = make(queue_size=2, queue_reject_threshold=10, queue_warning_threshold=0).gate
    gate.enter()
    gate.enter()
    with pytest.raises(Busy, match="queue_size=2"):
        gate.enter()


def test_admission_leaves_the_gate():
    s = make(queue_reject_threshold=1, queue_warning_threshold=0)
    s.gate.enter()
    r = req(SequenceState(0))
    s.submit(r)
    with pytest.raises(Busy):
        s.gate.enter()
    s.plan()
    assert s.running == [r] and s.gate.count == 0
    s.gate.enter()  # running requests do not count: only waiting ones


def test_leave_without_enter_never_goes_below_zero():
    gate = QueueGate(reject_at=1)
    gate.leave()
    gate.enter()
    with pytest.raises(Busy):
        gate.enter()


def test_gate_is_thread_safe():
    gate = QueueGate(reject_at=4000)
    refused = []

    def worker():
        count = 0
        for _ in range(1000):
            try:
                gate.enter()
            except Busy:
                count += 1
        refused.append(count)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gate.count == 4000 and sum(refused) == 4000 == gate.rejected_total


# -- warnings ----------------------------------------------------------------------------------

def _warnings(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_warning_logged_once_per_crossing(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    s = make(queue_warning_threshold=3, queue_reject_threshold=10)
    for _ in range(6):
        s.gate.enter()
    assert len(_warnings(caplog)) == 1
    assert "3 waiting requests" in _warnings(caplog)[0].getMessage()
    for _ in range(3):
        s.gate.leave()  # 3 waiting: still at the threshold
    s.gate.enter()
    assert len(_warnings(caplog)) == 1
    for _ in range(2):
        s.gate.leave()  # 2 waiting: below the threshold, re-armed
    s.gate.enter()  # 3 again: a new crossing
    assert len(_warnings(caplog)) == 2
    s.gate.enter()
    assert len(_warnings(caplog)) == 2
    assert s.stats().queue_warnings_total == 2


def test_warning_rearms_only_well_below_a_large_threshold(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    gate = QueueGate(reject_at=100, warn_at=20)  # re-armed below 18
    for _ in range(20):
        gate.enter()
    gate.leave()
    gate.enter()  # hovering at 19/20: no new warning
    assert gate.warnings_total == 1
    for _ in range(3):
        gate.leave()  # 17
    for _ in range(3):
        gate.enter()
    assert gate.warnings_total == 2 and len(_warnings(caplog)) == 2


def test_warning_threshold_zero_is_off(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    gate = make(queue_warning_threshold=0, queue_reject_threshold=5).gate
    for _ in range(5):
        gate.enter()
    assert gate.warnings_total == 0 and _warnings(caplog) == []


# -- order ---------------------------------------------------------------------------------------

PRIORITIES = ["low", "normal", "urgent", "high", "normal"]


@pytest.mark.parametrize("fair", [True, False])
def test_priority_orders_admission(fair):
    s = make(fair_scheduling_enabled=fair)
    rs = [req(SequenceState(i), p) for i, p in enumerate(PRIORITIES)]
    for r in rs:
        s.submit(r)
    assert [r.priority for r in drain(s)] == ["urgent", "high", "normal", "normal", "low"]


def test_equal_priorities_keep_arrival_order():
    s = make()
    rs = [req(SequenceState(i), p) for i, p in enumerate(PRIORITIES)]
    for r in rs:
        s.submit(r)
    normals = [r for r in drain(s) if r.priority == "normal"]
    assert normals == [rs[1], rs[4]]


@pytest.mark.parametrize("fair", [True, False])
def test_fifo_when_priority_is_off(fair):
    s = make(priority_scheduling_enabled=False, fair_scheduling_enabled=fair)
    rs = [req(SequenceState(i), p) for i, p in enumerate(PRIORITIES)]
    for r in rs:
        s.submit(r)
    assert drain(s) == rs


def _flood(s, admit_first):
    heavy = SequenceState(0)
    flood = [req(heavy) for _ in range(20)]
    for r in flood:
        s.submit(r)
    order = []
    if admit_first:  # the first of the 20 already runs when the others arrive
        s.plan()
        order = list(s.running)
    others = [req(SequenceState(i)) for i in (1, 2, 3)]
    for r in others:
        s.submit(r)
    for r in list(s.running):
        s.remove(r)
    return flood, others, order + drain(s)


@pytest.mark.parametrize("admit_first", [False, True])
def test_fairness_one_session_cannot_starve_others(admit_first):
    s = make(max_concurrent=1)
    flood, others, order = _flood(s, admit_first)
    assert order == [flood[0], *others, *flood[1:]]


def test_without_fairness_the_flood_goes_first():
    s = make(max_concurrent=1, fair_scheduling_enabled=False)
    flood, others, order = _flood(s, False)
    assert order == flood + others


def test_fairness_applies_within_a_priority_level():
    s = make(max_concurrent=1)
    a, b, c = SequenceState(0), SequenceState(1), SequenceState(2)
    a_reqs = [req(a) for _ in range(4)]
    for r in a_reqs:
        s.submit(r)
    b_req, c_req = req(b), req(c, "high")
    s.submit(b_req)
    s.submit(c_req)
    assert drain(s) == [c_req, a_reqs[0], b_req, *a_reqs[1:]]


def test_two_backlogged_sessions_alternate():
    s = make(max_concurrent=1)
    a_session, b_session = SequenceState(0), SequenceState(1)
    a = [req(a_session) for _ in range(3)]
    b = [req(b_session) for _ in range(3)]
    for r in a + b:
        s.submit(r)
    assert drain(s) == [a[0], b[0], a[1], b[1], a[2], b[2]]


@pytest.mark.parametrize("priority,fair", [(True, True), (True, False), (False, True)])
def test_a_sessions_own_requests_keep_their_order(priority, fair):
    s = make(max_concurrent=4, priority_scheduling_enabled=priority,
             fair_scheduling_enabled=fair)
    mine = SequenceState(0)
    own = [req(mine, p) for p in ("low", "urgent", "normal", "high")]
    other = [req(SequenceState(i), p) for i, p in ((1, "high"), (2, "low"))]
    for r in [own[0], other[0], own[1], other[1], own[2], own[3]]:
        s.submit(r)
    order = drain(s)
    assert [r for r in order if r.session is mine] == own


def test_one_request_per_session_even_with_room():
    s = make(max_concurrent=10)
    sess = SequenceState(0)
    first, second = req(sess), req(sess)
    other = req(SequenceState(1), "low")
    for r in (first, second, other):
        s.submit(r)
    s.plan()
    assert s.running == [first, other] and s.waiting == [second]


def test_failed_admission_lets_the_sessions_next_request_in():
    s = make(max_concurrent=1)
    sess = SequenceState(0)
    too_long, fine = req(sess, n=100), req(sess)
    s.submit(too_long)
    s.submit(fine)
    plan = s.plan()
    assert [(r, type(e)) for r, e in plan.failed] == [(too_long, PromptTooLong)]
    assert s.running == [fine] and s.waiting == []


def test_many_waiting_requests_drain_fairly():
    s = make(max_concurrent=8)
    sessions = [SequenceState(i) for i in range(50)]
    submitted = [req(sessions[(i * 7) % 50], ["low", "normal", "high"][i % 3])
                 for i in range(3000)]
    for r in submitted:
        s.submit(r)
    order = drain(s)
    assert sorted(map(id, order)) == sorted(map(id, submitted))
    for sess in sessions[:5]:
        assert [r for r in order if r.session is sess] == \
            [r for r in submitted if r.session is sess]


# -- expiry ------------------------------------------------------------------------------------

def test_expire_waiting_with_auto_queue_cleanup():
    clock = FakeClock()
    s = make(clock=clock, max_concurrent=1)
    now = clock.now()
    running = req(SequenceState(0), deadline=now + 1)
    s.submit(running)
    s.plan()
    late, later, never = (req(SequenceState(1), deadline=now + 5),
                          req(SequenceState(2), deadline=now + 2), req(SequenceState(3)))
    for r in (late, later, never):
        s.gate.enter()
        s.submit(r)
    assert s.expire_waiting() == []
    clock.advance(5)
    assert s.expire_waiting() == [later, late]  # earliest deadline first; running untouched
    assert s.waiting == [never] and s.running == [running]
    assert later.state is RequestState.DONE and s.gate.count == 1
    s.remove(later)  # the engine finishing it: no second leave
    assert s.gate.count == 1
    clock.advance(10_000)
    assert s.expire_waiting() == []
    assert s.stats().expired_total == 2 and s.stats().cancelled_total == 0


def test_without_auto_queue_cleanup_expired_requests_stay_queued():
    clock = FakeClock()
    s = make(clock=clock, auto_queue_cleanup=False)
    r = req(SequenceState(0), deadline=clock.now() + 1)
    s.submit(r)
    clock.advance(2)
    assert s.expire_waiting(clock.now()) == [] and s.waiting == [r]
    s.plan()
    assert s.running == [r]  # the engine's deadline check ends it
    assert s.stats().expired_total == 0


def test_expire_waiting_with_many_requests_keeps_the_rest():
    clock = FakeClock()
    s = make(clock=clock, max_concurrent=1)
    rs = [req(SequenceState(i), deadline=clock.now() + i) for i in range(1, 501)]
    for r in rs:
        s.submit(r)
    clock.advance(100)
    assert s.expire_waiting() == rs[:100]
    assert s.waiting == rs[100:]


# -- stats -------------------------------------------------------------------------------------

def test_stats_add_up():
    clock = FakeClock()
    s = make(clock=clock, max_concurrent=2, queue_reject_threshold=6, queue_warning_threshold=5)
    sessions = [SequenceState(i) for i in range(6)]
    rs = [req(sessions[0], n=100), req(sessions[1]), req(sessions[2], deadline=clock.now() + 1),
          req(sessions[3]), req(sessions[4]), req(sessions[5])]
    for r in rs:
        s.gate.enter()
        s.submit(r)
    with pytest.raises(Busy):
        s.gate.enter()
    assert s.stats() == SchedulerStats(
        waiting=6, running=0, submitted_total=6, admitted_total=0, failed_total=0,
        expired_total=0, cancelled_total=0, rejected_total=1, queue_warnings_total=1,
        queue_peak=6)
    s.remove(rs[5])                        # cancelled while waiting
    clock.advance(1)
    assert s.expire_waiting() == [rs[2]]   # timed out while waiting
    plan = s.plan()                        # rs[0] fails (too long), rs[1] and rs[3] run
    assert [r for r, _ in plan.failed] == [rs[0]] and s.running == [rs[1], rs[3]]
    stats = s.stats()
    assert stats == SchedulerStats(
        waiting=1, running=2, submitted_total=6, admitted_total=2, failed_total=1,
        expired_total=1, cancelled_total=1, rejected_total=1, queue_warnings_total=1,
        queue_peak=6)
    assert stats.submitted_total == (stats.waiting + stats.admitted_total + stats.failed_total
                                     + stats.expired_total + stats.cancelled_total)
    assert s.gate.count == stats.waiting
    drain(s)
    assert s.stats().admitted_total == 3 and s.gate.count == 0
