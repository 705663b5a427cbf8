"""More sessions than KV slots: idle sessions are offloaded to host RAM and restored bit-exact,
or (past max_memory_mb, or with it 0) evicted and prefilled again; outputs never change."""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend.core.request import SequenceState
from wasi_nn_backend.engine.offload import OffloadStore

GREEDY = {"temperature": 0, "ignore_eos": True, "max_tokens": 12}
TURN1 = "The cat sat on the mat and"
TURN2 = " then the dog came along and"


def two_turns(session):
    first = session.complete(TURN1, **GREEDY)
    second = session.complete(TURN1 + first.text + TURN2, **GREEDY)
    return first, second


def graph_with(path, slots, memory_mb):
    backend = Backend({"model": {"n_ctx": 256, "n_seq_max": slots},
                       "memory": {"max_memory_mb": memory_mb}})
    return backend, backend.load(path)


def reference(path):
    backend, graph = graph_with(path, 2, 64)
    with backend, graph.session() as s:
        return [c.generated_tokens for c in two_turns(s)]


@pytest.mark.parametrize("memory_mb", [64, 0])
def test_swapped_or_evicted_session_continues_exactly(tiny_model_path, memory_mb):
    expected = reference(tiny_model_path)
    backend, graph = graph_with(tiny_model_path, 1, memory_mb)
    with backend:
        a, b = graph.session(), graph.session()
        first = a.complete(TURN1, **GREEDY)
        b.complete("Something else entirely", **GREEDY)   # takes the only slot
        assert a.state.seq_id is None
        assert (a.state.offloaded_tokens is not None) == (memory_mb > 0)
        second = a.complete(TURN1 + first.text + TURN2, **GREEDY)
        assert [first.generated_tokens, second.generated_tokens] == expected
        counters = graph.engine.counters
        if memory_mb:  # restored from RAM: nothing prefilled again
            assert counters.offloads >= 1 and counters.restores == 1
            assert second.reused_tokens >= first.prompt_tokens
            assert second.prefilled_tokens == second.prompt_tokens - second.reused_tokens
        else:          # evicted: the whole prompt again
            assert counters.evictions >= 1 and second.reused_tokens == 0


def test_many_sessions_round_robin_on_two_slots(tiny_model_path):
    prompts = [f"Session {i} says hello" for i in range(6)]
    backend, graph = graph_with(tiny_model_path, 6, 64)
    with backend:
        alone = [graph.session().complete(p, **GREEDY).generated_tokens for p in prompts]
    backend, graph = graph_with(tiny_model_path, 2, 64)
    with backend:
        sessions = [graph.session() for _ in prompts]
        for _ in range(2):  # every session comes back after others took its slot
            got = [s.complete(p, **GREEDY).generated_tokens for s, p in zip(sessions, prompts)]
            assert got == alone
        assert graph.engine.offload.bytes_used <= 64 * 1024 * 1024
        assert graph.engine.counters.restores >= 4


def test_closing_a_swapped_session_frees_its_bytes(tiny_model_path):
    backend, graph = graph_with(tiny_model_path, 1, 64)
    with backend:
        a, b = graph.session(), graph.session()
        a.complete(TURN1, **GREEDY)
        b.complete(TURN1, **GREEDY)
        assert len(graph.engine.offload) == 1 and graph.engine.offload.bytes_used > 0
        a.close()
        assert len(graph.engine.offload) == 0 and graph.engine.offload.bytes_used == 0


def test_store_drops_least_recently_swapped_past_budget():
    store = OffloadStore(max_bytes=250)
    sessions = [SequenceState(i, offloaded_tokens=[1]) for i in range(3)]
    for s in sessions:
        store.put(s, b"x" * 100)
    assert store.bytes_used == 200 and len(store) == 2
    assert sessions[0].offloaded_tokens is None and store.take(sessions[0]) is None
    assert store.take(sessions[2]) == b"x" * 100 and store.bytes_used == 100
    store.put(sessions[1], b"y" * 300)  # larger than the budget: kept nowhere
    assert store.bytes_used == 0 and sessions[1].offloaded_tokens is None
