"""memory.max_cache_tokens and memory_pressure_threshold: idle sessions give KV cells back
before the cache is full, in cache_deletion_strategy order; enable_partial_cache_deletion drops
only the oldest part of a long idle session, and its next chat turn still reuses the rest."""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend

ASK = {"temperature": 0, "ignore_eos": True, "max_tokens": 10}
PROMPTS = ["The cat sat on the mat and the dog ran in the park today",
           "Once upon a time there was a king who lived in a castle",
           "In the beginning the sun was shining over the green hills"]


def backend_with(memory, slots=4, n_ctx=128):
    return Backend({"model": {"n_ctx": n_ctx, "n_seq_max": slots}, "memory": memory})


def alone(path, prompt):
    with backend_with({}) as backend:
        return backend.load(path).session().complete(prompt, **ASK).generated_tokens


@pytest.mark.parametrize("memory", [
    {"max_cache_tokens": 40, "enable_partial_cache_deletion": False},
    {"memory_pressure_threshold": 0.1, "enable_partial_cache_deletion": False}])
def test_idle_sessions_are_swapped_before_the_cache_fills(tiny_model_path, memory):
    with backend_with(memory) as backend:
        graph = backend.load(tiny_model_path)
        sessions = [graph.session() for _ in PROMPTS]
        first = [s.complete(p, **ASK) for s, p in zip(sessions, PROMPTS)]
        counters = graph.engine.counters
        assert counters.offloads >= 2                       # slots were free: pressure did it
        assert graph.engine.kv_cells()[0] <= 40 + len(first[-1].final_tokens)
        assert sessions[0].state.seq_id is None
        again = sessions[0].complete(PROMPTS[0], **ASK)       # restored from RAM, bit-exact
        assert again.generated_tokens == first[0].generated_tokens
        assert counters.restores >= 1 and again.reused_tokens == again.prompt_tokens - 1


def test_fifo_strategy_swaps_the_longest_resident_first(tiny_model_path):
    memory = {"max_cache_tokens": 70, "cache_deletion_strategy": "fifo",
              "enable_partial_cache_deletion": False}
    with backend_with(memory) as backend:
        graph = backend.load(tiny_model_path)
        a, b, c = (graph.session() for _ in range(3))
        a.complete(PROMPTS[0], **ASK)
        b.complete(PROMPTS[1], **ASK)
        a.complete(PROMPTS[0] + " more", **ASK)  # a used last, but resident first
        c.complete(PROMPTS[2], **ASK)
        assert a.state.seq_id is None and b.state.seq_id is not None


def test_partial_deletion_keeps_the_recent_part_and_the_chat_goes_on(tiny_model_path):
    memory = {"max_cache_tokens": 100, "n_keep_tokens": 8}
    with backend_with(memory, n_ctx=256) as backend:
        graph = backend.load(tiny_model_path)
        long_chat = graph.session()
        for turn in range(3):
            long_chat.chat(f"{PROMPTS[turn]} and so on, turn {turn}", **ASK)
        held = len(long_chat.state.kv_tokens)
        assert held > 100
        graph.session().complete(PROMPTS[0], **ASK)  # pressure: the idle long chat is cut
        counters = graph.engine.counters
        assert counters.shifts >= 1 and counters.offloads == 0
        assert long_chat.state.seq_id is not None
        assert 8 < len(long_chat.state.kv_tokens) < held
        kept = len(long_chat.state.kv_tokens)
        reply = long_chat.chat("And one more question?", **ASK)
        assert reply.reused_tokens == kept                    # the rest was not prefilled again
        assert reply.prefilled_tokens == reply.prompt_tokens - kept
