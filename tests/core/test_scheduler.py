from wasi_nn_backend.config import BackendSettings, MemoryConfig, RequestParams
from wasi_nn_backend.core.clock import FakeClock
from wasi_nn_backend.core.kv_policy import SlotPool
from wasi_nn_backend.core.scheduler import Scheduler
from wasi_nn_backend.core.session import Request, RequestState, SessionState


def make(n_slots=2, n_batch=8, max_concurrent=10):
    return Scheduler(n_batch=n_batch, n_ctx=64, pool=SlotPool(n_slots),
                     settings=BackendSettings(max_concurrent=max_concurrent),
                     memory=MemoryConfig(), can_shift=True, clock=FakeClock())


def req(session, n):
    return Request(session=session, prompt_tokens=list(range(1, n + 1)), params=RequestParams())


def test_prefill_is_chunked_to_n_batch():
    s = make(n_batch=8)
    r = req(SessionState(0), 20)
    s.submit(r)
    plan = s.plan()
    assert plan.prefill == [(r, 8)] and r.state is RequestState.PREFILL


def test_decode_tokens_come_first_then_prefill_fills_the_rest():
    s = make(n_batch=8)
    a, b = req(SessionState(0), 3), req(SessionState(1), 20)
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
    sess = SessionState(0)
    first, second = req(sess, 2), req(sess, 2)
    other = req(SessionState(1), 2)
    for r in (first, second, other):
        s.submit(r)
    s.plan()
    assert s.running == [first]
    assert list(s.waiting) == [second, other]


def test_max_concurrent_limits_admission():
    s = make(n_slots=4, max_concurrent=2)
    rs = [req(SessionState(i), 2) for i in range(3)]
    for r in rs:
        s.submit(r)
    s.plan()
    assert s.running == rs[:2]
    s.remove(rs[0])
    s.plan()
    assert s.running == [rs[1], rs[2]]
