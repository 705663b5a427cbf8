from wasi_nn_backend.config import BackendSettings, MemoryConfig, RequestParams
from wasi_nn_backend.engine.clock import FakeClock
from wasi_nn_backend.core.slots import SlotPool
from wasi_nn_backend.core.scheduler import Scheduler
from wasi_nn_backend.core.request import Request, RequestState, SequenceState


def make(n_slots=2, n_batch=8, max_concurrent=10):
    return Scheduler(n_batch=n_batch, n_ctx=64, pool=SlotPool(n_slots),
                     settings=BackendSettings(max_concurrent=max_concurrent),
                     memory=MemoryConfig(), can_shift=True, clock=FakeClock())


def req(session, n):
    return Request(session=session, prompt_tokens=list(range(1, n + 1)), params=RequestParams())


def test_prefill_is_chunked_to_n_batch():
    s = make(n_batch=8)
    r = req(SequenceState(0), 20)
    s.submit(r)
    plan = s.plan()
    assert plan.prefill == [(r, 8)] and r.state is RequestState.PREFILL


def test_decode_tokens_come_first_then_prefill_fills_the_rest():
    s = make(n_batch=8)
    a, b = req(SequenceState(0), 3), req(SequenceState(1), 20)
    s.submit(a)
    s.submit(b)
    s.plan()
    a.n_past = 3
    a.state = RequestState.GENERATING
    a.pending_token = 5
    a.session.kv_tokens = [1, 2, 3]
    b.n_past = 0
    plan = s.plan()
    assert plan.decode == [a] and plan.prefill == [(b, 7)]


def test_one_request_per_session_and_slot_limit():
    s = make(n_slots=1)
    sess = SequenceState(0)
    first, second = req(sess, 2), req(sess, 2)
    other = req(SequenceState(1), 2)
    for r in (first, second, other):
        s.submit(r)
    s.plan()
    assert s.running == [first]
    assert list(s.waiting) == [second, other]


def test_max_concurrent_limits_admission():
    s = make(n_slots=4, max_concurrent=2)
    rs = [req(SequenceState(i), 2) for i in range(3)]
    for r in rs:
        s.submit(r)
    s.plan()
    assert s.running == rs[:2]
    s.remove(rs[0])
    s.plan()
    assert s.running == [rs[1], rs[2]]


# -- steady plans: the last decode again, without looking at each request ---------------------
def generating(s, lengths):
    """Requests admitted and generating, their sessions holding ``lengths`` tokens."""
    rs = [req(SequenceState(i), 2) for i in range(len(lengths))]
    for r in rs:
        s.submit(r)
    s.plan()
    for r, n in zip(rs, lengths):
        r.n_past, r.state, r.pending_token = 2, RequestState.GENERATING, 5
        r.session.kv_tokens = [1] * n
    return rs


def commit(plan):  # what the engine does after a successful decode
    for r in plan.decode:
        r.session.kv_tokens.append(r.pending_token)


def make_roomy(**memory):
    return Scheduler(n_batch=8, n_ctx=64, pool=SlotPool(3),
                     settings=BackendSettings(max_concurrent=10),
                     memory=MemoryConfig(**memory), can_shift=True, clock=FakeClock())


def test_steady_plans_repeat_the_decode_exactly_until_a_shift_is_due():
    s = make_roomy(memory_pressure_threshold=1.0)
    a, b = generating(s, [40, 50])
    plans = []
    while not plans or not plans[-1].kv_actions:
        plans.append(s.plan())
        commit(plans[-1])
    # b (50 tokens) has room for 13 more steps after the first (50 + 1 + 13 = 64 = n_ctx);
    # the plan after them is a full one and shifts b.
    assert [p.steady for p in plans] == [False] + [True] * 13 + [False]
    assert all(p.decode == [a, b] for p in plans)
    assert [type(x).__name__ for x in plans[-1].kv_actions] == ["Shift"]


def test_steady_plans_stop_before_the_pressure_limit():
    s = make_roomy(max_cache_tokens=100)
    idle = SequenceState(9)
    s.pool.acquire(idle)
    idle.kv_tokens = [1] * 50                      # a victim for pressure relief
    a, b = generating(s, [10, 10])                 # 70 cached: 30 to spare, 2 per step
    plans = [s.plan()]
    while not plans[-1].kv_actions:
        commit(plans[-1])
        plans.append(s.plan())
    steady = sum(p.steady for p in plans)
    assert 0 < steady <= 14 and not plans[-1].steady
    assert 70 + 2 * (len(plans) - 1) > 100       # relief came when the limit was passed


def test_anything_new_ends_steady_plans():
    s = make_roomy()
    a, b = generating(s, [5, 5])
    commit(s.plan())
    assert s.plan().steady
    s.remove(a)                                    # finished or cancelled
    assert not s.plan().steady
    commit(s.plan())
    assert s.plan().steady
    s.submit(req(SequenceState(7), 3))              # someone waits: admission must look
    plan = s.plan()
    assert not plan.steady and plan.prefill
