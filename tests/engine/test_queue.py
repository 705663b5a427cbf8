"""The request queue through the engine: busy at the reject threshold, priorities, fairness,
deadlines of queued requests on a fake clock, and stats that add up."""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend, FakeClock, FinishReason
from wasi_nn_backend.errors import Busy, ErrorCode
from test_engine_faults import TickClock

LONG = {"temperature": 0, "ignore_eos": True, "max_tokens": 1_000_000}
SHORT = {"temperature": 0, "ignore_eos": True, "max_tokens": 2}


def make(path, clock=None, **backend):
    settings = {"max_concurrent": 1, "default_task_timeout_ms": 0, **backend}
    b = Backend({"backend": settings}, clock=clock)
    return b, b.load(path, {"model": {"n_ctx": 128, "n_seq_max": 4}})


def start_blocker(graph):
    blocker = graph.session()
    stream = blocker.complete_stream("Hello", **LONG)
    stream.get(timeout=30)  # it is generating: everything else queues behind it
    return stream


def test_busy_at_the_reject_threshold(tiny_model_path):
    backend, graph = make(tiny_model_path, queue_size=2)
    with backend:
        blocker = start_blocker(graph)
        queued = [graph.session().complete_stream("Hi", **SHORT) for _ in range(2)]
        with pytest.raises(Busy, match="queue is full"):
            graph.session().complete("Hi", **SHORT)
        blocker.cancel()
        assert all(q.result(timeout=30).code == ErrorCode.SUCCESS for q in queued)
        stats = backend.stats()
        assert stats.rejections == 1 and stats.queue_depth == 0
        graph.session().complete("Hi", **SHORT)  # room again


def test_priorities_order_admission(tiny_model_path):
    backend, graph = make(tiny_model_path, clock=TickClock(0.001))
    with backend:
        blocker = start_blocker(graph)
        order = ["low", "normal", "urgent", "high"]
        streams = {p: graph.session().complete_stream("Hi", **SHORT, priority=p) for p in order}
        blocker.cancel()
        done = {p: s.result(timeout=30).finished_at for p, s in streams.items()}
        assert sorted(done, key=done.get) == ["urgent", "high", "normal", "low"]


def test_fairness_one_busy_session_does_not_starve_others(tiny_model_path):
    backend, graph = make(tiny_model_path, clock=TickClock(0.001))
    with backend:
        blocker = start_blocker(graph)
        greedy = graph.session()
        many = [greedy.complete_stream("Hi", **SHORT) for _ in range(20)]
        few = [graph.session().complete_stream("Hi", **SHORT) for _ in range(3)]
        blocker.cancel()
        few_done = max(s.result(timeout=60).finished_at for s in few)
        many_done = sorted(s.result(timeout=60).finished_at for s in many)
        assert few_done < many_done[2]  # the 3 are served before the 20 drain


def test_queued_request_times_out_on_the_fake_clock(tiny_model_path):
    clock = FakeClock()
    backend, graph = make(tiny_model_path, clock=clock)
    with backend:
        blocker = start_blocker(graph)
        waiting = graph.session().complete_stream("Hi", **SHORT, timeout_ms=100)
        clock.advance(0.2)
        result = waiting.result(timeout=30)
        assert result.finish_reason == FinishReason.TIMEOUT and result.code == ErrorCode.TIMEOUT
        assert result.generated_tokens == ()
        blocker.cancel()
        assert backend.stats().timeouts == 1


def test_stats_add_up(tiny_model_path):
    backend, graph = make(tiny_model_path, max_concurrent=4)
    with backend:
        sessions = [graph.session() for _ in range(3)]
        results = [s.complete("Hello there", **SHORT) for s in sessions]
        results.append(sessions[0].complete("Hello there friend", **SHORT))
        stats = backend.stats()
        assert stats.sessions == 3 and stats.sessions_active == 0 and stats.sessions_idle == 3
        assert stats.prefill_tokens == sum(r.prefilled_tokens for r in results)
        assert stats.cache_hit_tokens == sum(r.reused_tokens for r in results) > 0
        assert stats.decode_tokens == sum(len(r.generated_tokens) - 1 for r in results)
        assert stats.kv_cells_used == sum(len(s.state.kv_tokens) for s in sessions)
        assert stats.kv_cells_total == 128 * 4 and stats.tokens_per_second > 0
        assert stats.queue_depth == 0 and stats.rejections == 0
