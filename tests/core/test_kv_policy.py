import pytest

from wasi_nn_backend.config import MemoryConfig
from wasi_nn_backend.core.kv_policy import common_prefix, plan_generation_room, plan_prompt
from wasi_nn_backend.core.plan import Move, Evict, Shift, Trim
from wasi_nn_backend.core.request import SequenceState
from wasi_nn_backend.core.slots import SlotPool
from wasi_nn_backend.errors import PromptTooLong

MEM = MemoryConfig(n_keep_tokens=4)


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0


def test_pool_assigns_free_slots_then_evicts_lru_idle():
    pool = SlotPool(2)
    a, b, c = (SequenceState(i) for i in range(3))
    assert pool.acquire(a) == [] and pool.acquire(b) == []
    a.last_used, b.last_used = 5.0, 1.0
    b.kv_tokens = [1, 2, 3]
    actions = pool.acquire(c)
    assert actions == [Evict(b, 1)]
    assert b.seq_id is None and b.kv_tokens == [] and c.seq_id == 1


def test_pool_waits_when_all_slots_busy():
    pool = SlotPool(1)
    a, b = SequenceState(0), SequenceState(1)
    pool.acquire(a)
    a.busy = True
    assert pool.acquire(b) is None


def test_prompt_reuses_common_prefix_and_trims_rest():
    s = SequenceState(0, seq_id=0, kv_tokens=[1, 2, 3, 4, 5])
    prompt, reuse, actions = plan_prompt(s, [1, 2, 3, 9, 9], n_ctx=64, memory=MEM,
                                         can_shift=True, truncate_ok=False)
    assert prompt == [1, 2, 3, 9, 9] and reuse == 3 and actions == [Trim(s, 3)]


def test_identical_prompt_still_evaluates_one_token():
    s = SequenceState(0, seq_id=0, kv_tokens=[1, 2, 3])
    _, reuse, actions = plan_prompt(s, [1, 2, 3], n_ctx=64, memory=MEM, can_shift=True,
                                    truncate_ok=False)
    assert reuse == 2 and actions == [Trim(s, 2)]


def test_too_long_prompt_rejected_without_truncation():
    s = SequenceState(0, seq_id=0)
    with pytest.raises(PromptTooLong):
        plan_prompt(s, list(range(16)), n_ctx=16, memory=MEM, can_shift=True, truncate_ok=False)


def test_too_long_chat_prompt_shifts_cached_part():
    kv = list(range(100, 114))                     # 14 cached tokens
    s = SequenceState(0, seq_id=0, kv_tokens=kv)
    prompt = kv + [7, 8, 9, 10]                    # 18 > room 15
    new_prompt, reuse, actions = plan_prompt(s, prompt, n_ctx=16, memory=MEM, can_shift=True,
                                             truncate_ok=True)
    assert len(new_prompt) <= 15
    assert new_prompt[:4] == kv[:4] and new_prompt[-4:] == [7, 8, 9, 10]
    assert isinstance(actions[0], Shift) and actions[0].keep == 4
    kv_after = kv[:4] + kv[4 + actions[0].discard:]
    assert new_prompt[:reuse] == kv_after[:reuse] and reuse == len(kv_after)


def test_generation_room_shift_or_full():
    s = SequenceState(0, seq_id=0, kv_tokens=list(range(16)))
    shift = plan_generation_room(s, n_ctx=16, memory=MEM, can_shift=True)
    assert shift == Shift(s, 4, 6)
    with pytest.raises(LookupError):
        plan_generation_room(s, n_ctx=16, memory=MemoryConfig(context_shifting=False),
                             can_shift=True)
    assert plan_generation_room(SequenceState(1, kv_tokens=[1]), n_ctx=16, memory=MEM,
                                can_shift=True) is None


def test_fifo_strategy_takes_the_longest_resident_slot():
    pool = SlotPool(2, strategy="fifo", deletion_strategy="fifo")
    a, b, c = (SequenceState(i) for i in range(3))
    pool.acquire(a)
    pool.acquire(b)
    a.last_used, b.last_used = 9.0, 5.0   # lru would pick b; a arrived first
    assert pool.acquire(c) == [Evict(a, 0)]


def test_swap_out_and_in_are_planned_for_idle_sessions():
    from wasi_nn_backend.core.plan import Restore, Offload
    pool = SlotPool(1, offload=True)
    a, b = SequenceState(0), SequenceState(1)
    pool.acquire(a)
    a.kv_tokens = [1, 2, 3]
    assert pool.acquire(b) == [Offload(a, 0)]
    assert a.offloaded_tokens == [1, 2, 3] and a.kv_tokens == []
    b.kv_tokens = [7]
    assert pool.acquire(a) == [Offload(b, 0), Restore(a, 0)]
    assert a.kv_tokens == [1, 2, 3] and a.offloaded_tokens is None and b.offloaded_tokens == [7]


def test_new_sessions_take_the_slot_that_keeps_busy_ids_consecutive():
    pool = SlotPool(6)
    sessions = [SequenceState(session_id=i) for i in range(6)]
    for s in sessions[:4]:
        pool.acquire(s)
        s.busy = True
    assert [s.seq_id for s in sessions[:4]] == [0, 1, 2, 3]
    pool.release(sessions[1])  # slot 1 free; busy ids 0, 2, 3: two runs
    sessions[0].busy = False   # idle sessions do not count: busy ids 2, 3
    pool.acquire(sessions[4])  # 1 or 4 join the run 2..3; 1 is lower
    assert sessions[4].seq_id == 1
    sessions[4].busy = True
    sessions[2].busy = False   # busy 1, 3: free slot 4 joins 3 (two runs), 5 would make three
    pool.acquire(sessions[5])
    assert sessions[5].seq_id == 4


def _pool_with(states: str):
    """A pool whose slot i is busy (B), idle (I) or free (.) as states[i] says."""
    pool = SlotPool(len(states))
    sessions = {}
    for i, state in enumerate(states):
        session = SequenceState(session_id=i)
        pool.acquire(session)
        assert session.seq_id == i
        sessions[i] = session
    for i, state in enumerate(states):
        if state == ".":
            pool.release(sessions[i])
        else:
            sessions[i].busy = state == "B"
            sessions[i].kv_tokens = [1] * (i + 1)
    return pool, sessions


def _layout(pool) -> str:
    return "".join("B" if (s := pool._owner.get(i)) is not None and s.busy
                   else "I" if s is not None else "." for i in range(pool.n_slots))


@pytest.mark.parametrize("before, after, moves", [
    ("BBBB....", "BBBB....", 0),   # one run: nothing to do
    ("BB.B....", "BBB.....", 1),   # the lone busy one moves into the gap
    ("BBIB....", "BBB.I...", 2),   # the idle one steps out, the busy one steps in
])
def test_compaction_makes_busy_ids_one_run_in_at_most_two_moves(before, after, moves):
    pool, sessions = _pool_with(before)
    owners = {s.session_id: s.kv_tokens for s in sessions.values() if s.seq_id is not None}
    actions = pool.compact()
    assert len(actions) == moves and _layout(pool) == after
    for action in actions:  # bookkeeping follows the sessions, their tokens untouched
        assert action.session.seq_id == action.dst and pool._owner[action.dst] is action.session
    assert {s.session_id: s.kv_tokens for s in pool.resident} == owners
    assert sorted(pool._free + list(pool._owner)) == list(range(pool.n_slots))


@pytest.mark.parametrize("before", ["BIBIBIB.", "BBIBIIII", "IBIBIBIBIBIBIBIB",
                                    "BIIIIIIIIIIIIIIB", "IIBIIIBIIIBIIIBI"])
def test_compaction_goes_on_step_by_step_even_with_every_slot_held(before):
    """Regression (issue 18's HTTP bench: 8 busy sessions spread over 16 held slots decoded in
    several ubatches, and compaction did nothing for lack of a free slot): at most two actions
    a step, idle sessions inside the window give their slot up when no slot is free, and the
    busy ones end in one run; busy sessions keep their slot's tokens."""
    pool, sessions = _pool_with(before)
    busy = {s.session_id: list(s.kv_tokens) for s in sessions.values() if s.busy}
    for _ in range(len(before)):
        actions = pool.compact()
        assert len(actions) <= 2
        for action in actions:
            if isinstance(action, Move):
                assert pool._owner[action.dst] is action.session
            else:   # a slot given up: only an idle session's
                assert not action.session.busy and action.session.seq_id is None
        if not actions:
            break
    ids = sorted(s.seq_id for s in pool.resident if s.busy)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert {s.session_id: s.kv_tokens for s in pool.resident if s.busy} == busy
    assert sorted(pool._free + list(pool._owner)) == list(range(pool.n_slots))


def test_common_prefix_matches_a_plain_loop():
    """common_prefix compares slices (doubling windows, then a binary search): the same
    answer as walking both lists, for every length and every place they part."""
    import random

    from wasi_nn_backend.core.kv_policy import common_prefix

    def plain(a, b):
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        return i
    rng = random.Random(7)
    for _ in range(3000):
        base = [rng.randrange(3) for _ in range(rng.randrange(0, 300))]
        a, b = base[:rng.randrange(len(base) + 1)], list(base[:rng.randrange(len(base) + 1)])
        if b and rng.random() < 0.7:
            b[rng.randrange(len(b))] += 1
        assert common_prefix(a, b) == plain(a, b)
