"""Many users: 64 sessions x 4 chat turns from 32 threads on one model with 4 KV slots. Every
reply arrives and equals what the same session produces alone (greedy, F32); swapped KV stays
within max_memory_mb; the counters add up."""
from __future__ import annotations

import threading

from wasi_nn_backend import Backend

SESSIONS, TURNS, THREADS = 64, 4, 32
ASK = {"temperature": 0, "max_tokens": 6, "ignore_eos": True}
CONFIG = {"backend": {"max_sessions": 200, "default_task_timeout_ms": 120000},
          "memory": {"max_memory_mb": 4}}


def message(session: int, turn: int) -> str:
    return f"User {session} asks question {turn}"


def replies_alone(path) -> list[list[str]]:
    with Backend(CONFIG) as backend:
        graph = backend.load(path, {"model": {"n_ctx": 512, "n_seq_max": 1}})
        out = []
        for i in range(SESSIONS):
            with graph.session() as s:
                out.append([s.chat(message(i, t), **ASK).text for t in range(TURNS)])
        return out


def test_64_sessions_4_turns_32_threads_4_slots(tiny_model_path):
    expected = replies_alone(tiny_model_path)
    got = [[None] * TURNS for _ in range(SESSIONS)]
    errors = []
    completions = []  # list.append is atomic: safe from the 32 threads
    with Backend(CONFIG) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 512, "n_seq_max": 4}})
        sessions = [graph.session() for _ in range(SESSIONS)]
        start = threading.Barrier(THREADS)

        def worker(k: int) -> None:
            mine = range(k, SESSIONS, THREADS)
            start.wait(30)
            try:
                for turn in range(TURNS):
                    for i in mine:
                        done = sessions[i].chat(message(i, turn), **ASK)
                        got[i][turn] = done.text
                        completions.append(done)
            except Exception as error:  # reported below, with the thread's name
                errors.append(error)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert got == expected
        engine = graph.engine
        counters = engine.counters.snapshot()
        assert counters["finished"] == SESSIONS * TURNS and counters["failed"] == 0
        assert engine.offload.bytes_used <= 4 * 1024 * 1024
        assert counters["offloads"] > 0 and counters["restores"] > 0
        assert counters["restores"] + counters["evictions"] <= counters["offloads"] \
            + counters["evictions"]
        for s in sessions:
            assert [m["role"] for m in s.history] == ["user", "assistant"] * TURNS
        stats = backend.stats()  # the counters add up
        assert stats.sessions == SESSIONS and stats.sessions_active == 0
        assert stats.queue_depth == 0 and stats.rejections == 0 and stats.timeouts == 0
        assert len(completions) == SESSIONS * TURNS
        assert all(c.prefilled_tokens + c.reused_tokens == c.prompt_tokens for c in completions)
        assert stats.prefill_tokens == sum(c.prefilled_tokens for c in completions)
        assert stats.cache_hit_tokens == sum(c.reused_tokens for c in completions)
        assert stats.decode_tokens == sum(len(c.generated_tokens) - 1 for c in completions)
        assert stats.sessions_offloaded == sum(s.state.offloaded_tokens is not None for s in sessions)
        assert stats.offload_bytes == engine.offload.bytes_used <= 4 * 1024 * 1024
        later_turns = [c for c in completions if c.reused_tokens]  # turns 2-4 reuse the cache
        assert len(later_turns) >= SESSIONS * (TURNS - 1)
