"""Session ids, limits, idle cleanup by a timer on an injected clock, not_found afterwards."""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend, FakeClock
from wasi_nn_backend.errors import BackendRuntimeError, NotFound


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
