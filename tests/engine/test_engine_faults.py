"""What the engine does when llama.cpp says no, and time limits on an injected clock."""
from __future__ import annotations

import threading

import pytest

from wasi_nn_backend import Backend, FinishReason
from wasi_nn_backend.errors import BackendRuntimeError, ErrorCode

GREEDY = {"temperature": 0, "ignore_eos": True}


class TickClock:
    """Every reading moves time on by ``step`` seconds: deterministic, never sleeps."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.value = 0.0
        self.lock = threading.Lock()

    def now(self) -> float:
        with self.lock:
            self.value += self.step
            return self.value


def load(path, clock=None, **model):
    backend = Backend({"backend": {"default_task_timeout_ms": 0}}, clock=clock)
    return backend, backend.load(path, {"model": {"n_ctx": 128, "n_seq_max": 2, **model}})


def test_decode_no_kv_room_with_nothing_to_evict_fails_the_request_only(tiny_model_path,
                                                                         monkeypatch):
    backend, graph = load(tiny_model_path)
    with backend:
        real = graph.engine.context.decode
        monkeypatch.setattr(graph.engine.context, "decode", lambda batch: 1)
        with graph.session() as s, pytest.raises(BackendRuntimeError, match="KV cache full"):
            s.complete("Hello", **GREEDY, max_tokens=4)
        monkeypatch.setattr(graph.engine.context, "decode", real)
        with graph.session() as s:  # the engine lives on
            assert len(s.complete("Hello", **GREEDY, max_tokens=4).generated_tokens) == 4


def test_decode_no_kv_room_evicts_an_idle_session_and_retries(tiny_model_path, monkeypatch):
    backend, graph = load(tiny_model_path)
    with backend:
        idle = graph.session()
        idle.complete("Some cached text", **GREEDY, max_tokens=2)
        assert idle.state.seq_id is not None
        real = graph.engine.context.decode
        calls = []

        def flaky(batch):
            calls.append(1)
            return 1 if len(calls) == 1 else real(batch)
        monkeypatch.setattr(graph.engine.context, "decode", flaky)
        with graph.session() as s:
            assert len(s.complete("Hello", **GREEDY, max_tokens=3).generated_tokens) == 3
        assert idle.state.seq_id is None and idle.state.kv_tokens == []
        # the evicted session still works: it is prefilled again from its prompt
        assert idle.complete("Some cached text", **GREEDY, max_tokens=2).reused_tokens == 0


@pytest.mark.parametrize("code", [-1, 2, -3])
def test_decode_errors_roll_back_and_fail(tiny_model_path, monkeypatch, code):
    backend, graph = load(tiny_model_path)
    with backend:
        with graph.session() as s:
            first = s.complete("Hello world", **GREEDY, max_tokens=3)
            real = graph.engine.context.decode
            monkeypatch.setattr(graph.engine.context, "decode", lambda batch: code)
            with pytest.raises(BackendRuntimeError, match=str(code)):
                s.complete("Hello world again", **GREEDY, max_tokens=3)
            monkeypatch.setattr(graph.engine.context, "decode", real)
            kv = list(s.state.kv_tokens)
            assert graph.engine.context.seq_pos_max(s.state.seq_id) == len(kv) - 1
            again = s.complete("Hello world", **GREEDY, max_tokens=3)
            assert again.generated_tokens == first.generated_tokens


def test_max_time_ms_stops_generation(tiny_model_path):
    backend, graph = load(tiny_model_path, clock=TickClock(0.005))
    with backend, graph.session() as s:
        c = s.complete("Hello", **GREEDY, max_tokens=1000, max_time_ms=100)
    assert c.finish_reason == FinishReason.TIME and c.code == ErrorCode.SUCCESS
    assert 1 <= len(c.generated_tokens) < 100


def test_request_timeout_keeps_partial_output(tiny_model_path):
    backend, graph = load(tiny_model_path, clock=TickClock(0.005))
    with backend, graph.session() as s:
        c = s.complete("Hello", **GREEDY, max_tokens=1000, timeout_ms=200)
    assert c.finish_reason == FinishReason.TIMEOUT and c.code == ErrorCode.TIMEOUT
    assert len(c.generated_tokens) > 0 and c.text is not None


def test_closing_the_backend_wakes_waiters(tiny_model_path):
    backend, graph = load(tiny_model_path)
    s = graph.session()
    stream = s.complete_stream("Hello", **GREEDY, max_tokens=1_000_000)
    stream.get(timeout=30)
    backend.close()
    try:  # it ends at once, one way or the other; it never hangs (TimeoutError)
        assert stream.result(timeout=30).finish_reason == FinishReason.CANCELLED
    except BackendRuntimeError:
        pass
