"""Session ids, limits, idle cleanup by a timer on an injected clock, not_found afterwards;
closing a session cancels its running chat at once, and a queued request keeps its session
from cleanup."""
from __future__ import annotations

import threading

import pytest

from wasi_nn_backend import Backend, FakeClock, FinishReason
from wasi_nn_backend.errors import BackendRuntimeError, ErrorCode, NotFound

ENDLESS = {"temperature": 0, "ignore_eos": True, "max_tokens": -1}


@pytest.fixture
def clock():
    return FakeClock()


def make(clock, path, **backend):
    b = Backend({"backend": backend}, clock=clock)
    return b, b.load(path, {"model": {"n_ctx": 128, "n_seq_max": 2}})


def test_idle_sessions_are_closed_by_the_timer(clock, tiny_model_path):
    backend, graph = make(clock, tiny_model_path, idle_timeout_ms=1000)
    with backend:
        old, named = graph.session(), graph.session("alice")
        handle = old.handle
        clock.advance(0.5)
        fresh = graph.session()
        clock.advance(0.6)           # old and named: 1.1 s idle; fresh: 0.6 s
        # two passes: one may have read the clock before the advance and end after it
        assert backend.wait_cleanup_pass(timeout=10)
        assert backend.wait_cleanup_pass(timeout=10)
        with pytest.raises(NotFound):
            backend.session(handle)
        assert backend.session(fresh.handle) is fresh
        assert old.closed and named.closed
        assert graph.session("alice") is not named  # the id now starts a new session


def test_activity_keeps_a_session(clock, tiny_model_path):
    backend, graph = make(clock, tiny_model_path, idle_timeout_ms=1000)
    with backend:
        s = graph.session()
        for _ in range(3):
            clock.advance(0.8)
            s.complete("Hi", temperature=0, max_tokens=1)
        assert backend.wait_cleanup_pass(timeout=10)
        assert backend.session(s.handle) is s


def test_no_cleanup_when_off_and_the_limit_is_an_error(clock, tiny_model_path):
    backend, graph = make(clock, tiny_model_path, idle_timeout_ms=10, auto_cleanup=False,
                          max_sessions=2)
    with backend:
        a, b = graph.session(), graph.session()
        clock.advance(5)
        assert backend.cleanup_idle() == []
        with pytest.raises(BackendRuntimeError, match="max_sessions"):
            graph.session()
        a.close()
        graph.session()


def test_lru_eviction_at_the_limit(clock, tiny_model_path):
    backend, graph = make(clock, tiny_model_path, max_sessions=3)
    with backend:
        sessions = []
        for _ in range(3):
            sessions.append(graph.session())
            clock.advance(0.01)
        sessions[0].complete("Hi", temperature=0, max_tokens=1)  # now the most recent
        clock.advance(0.01)
        graph.session()
        assert sessions[1].closed and not sessions[0].closed and not sessions[2].closed


def test_handles_are_never_reused(clock, tiny_model_path):
    backend, graph = make(clock, tiny_model_path)
    with backend:
        seen = set()
        for _ in range(20):
            s = graph.session()
            assert s.handle not in seen
            seen.add(s.handle)
            s.close()


class TickingClock(FakeClock):
    """A fake clock that moves 0.1 s each time it is read while ``ticking``: a request that
    reads it every step lasts seconds of fake time."""

    ticking = False

    def now(self) -> float:
        if self.ticking:
            self.advance(0.1)
        return super().now()


def test_idle_time_counts_from_when_the_last_request_ended(tiny_model_path):
    clock = TickingClock()
    backend = Backend({"backend": {"idle_timeout_ms": 1000, "default_task_timeout_ms": 0}},
                      clock=clock)
    graph = backend.load(tiny_model_path, {"model": {"n_ctx": 128, "n_seq_max": 2}})
    with backend:
        s = graph.session()
        clock.ticking = True
        done = s.chat("Hi", temperature=0, max_tokens=30, ignore_eos=True)
        clock.ticking = False
        assert done.seconds > 2          # the request ran for longer than idle_timeout_ms
        clock.advance(0.3)               # then 0.3 s of quiet: not idle for 1 s yet
        assert backend.cleanup_idle() == []
        assert backend.session(s.handle) is s and len(s.history) == 2
        clock.advance(0.8)               # 1.1 s since it answered (the timer may be first)
        backend.cleanup_idle()
        assert s.closed


def test_a_session_is_not_idle_while_its_stream_waits_to_be_read(tiny_model_path):
    clock = FakeClock()
    backend = Backend({"backend": {"idle_timeout_ms": 1000}}, clock=clock)
    graph = backend.load(tiny_model_path, {"model": {"n_ctx": 128, "n_seq_max": 2}})
    with backend:
        s = graph.session()
        stream = s.complete_stream("Hi", temperature=0, max_tokens=3)
        end = stream.result(timeout=30).finished_at
        clock.advance(0.9)
        assert backend.cleanup_idle() == []
        assert clock.now() - end < 1 and s.last_activity == end


def test_a_session_is_not_idle_while_it_embeds_nor_right_after(tiny_encoder_path):
    clock = FakeClock()
    backend = Backend({"backend": {"idle_timeout_ms": 1000}}, clock=clock)
    graph = backend.load(tiny_encoder_path, {"embedding": True, "model": {"n_ctx": 64}})
    with backend:
        s = graph.session()
        engine = s.loaded.engine
        real = engine.embed
        closed_meanwhile = []

        def slow_embed(tokens):           # 5 s pass while the embedding is computed
            future = real(tokens)
            clock.advance(5)
            closed_meanwhile.extend(backend.cleanup_idle())
            return future

        engine.embed = slow_embed
        try:
            assert len(s.embed("hello")) > 0
        finally:
            del engine.embed
        assert closed_meanwhile == []
        clock.advance(0.5)
        assert backend.cleanup_idle() == [] and not s.closed


def test_close_cancels_a_running_chat_without_waiting_for_it(tiny_model_path):
    with Backend({"backend": {"default_task_timeout_ms": 0}}) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 2}})
        session = graph.session()
        submitted = []
        started = threading.Event()
        submit = session._submit

        def watched(*args, **kw):  # hand the chat's stream to the test
            submitted.append(submit(*args, **kw))
            started.set()
            return submitted[-1]
        session._submit = watched
        result = {}
        chat = threading.Thread(target=lambda: result.setdefault(
            "reply", session.chat("Hello", **ENDLESS)))
        chat.start()
        assert started.wait(30)
        submitted[0].get(timeout=30)   # it is generating (and would, shifting, forever)
        session.close()
        chat.join(30)
        assert not chat.is_alive()
        assert result["reply"].finish_reason == FinishReason.CANCELLED


def test_a_queued_request_keeps_its_session_from_cleanup(tiny_model_path):
    config = {"backend": {"max_sessions": 2, "max_concurrent": 1,
                          "default_task_timeout_ms": 0}}
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 2}})
        busy = graph.session().complete_stream("Hello", **ENDLESS)
        busy.get(timeout=30)
        queued_session = graph.session()
        queued = queued_session.complete_stream("Hi", temperature=0, max_tokens=2)
        with pytest.raises(BackendRuntimeError, match="max_sessions"):
            graph.session()       # nobody is idle: the queued one is not evicted
        assert not queued_session.closed
        busy.cancel()
        assert queued.result(timeout=30).code == ErrorCode.SUCCESS
