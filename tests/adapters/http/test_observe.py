"""The HTTP server's /health, /metrics and /slots (adapters/http/observe.py), on a Starlette app
with just those routes over a Backend serving the tiny model: three sessions on two KV slots
(so one is swapped out to host RAM), then the health check, the Prometheus counters against
backend.stats(), and the per-session view."""
from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from wasi_nn_backend import Backend, FakeClock  # noqa: E402
from wasi_nn_backend.adapters.http.observe import routes  # noqa: E402

ASK = {"temperature": 0, "ignore_eos": True, "max_tokens": 6}


@pytest.fixture
def served(tiny_model_path):
    clock = FakeClock()
    backend = Backend({"backend": {"max_sessions": 8}}, clock=clock)
    graph = backend.load(tiny_model_path, {"model": {"n_ctx": 128, "n_seq_max": 2}})
    client = TestClient(Starlette(routes=routes(backend, {"tiny": graph})))
    with backend, client:
        yield backend, graph, client, clock


def samples(text: str) -> dict[str, float]:
    """sample name -> value (no labels are used)."""
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


def test_health_ok_then_503_when_unloaded(served):
    backend, graph, client, _ = served
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    graph.close()
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "models": {"tiny": "unloaded"}}
    backend.close()
    assert client.get("/health").status_code == 503


def test_metrics_match_stats_and_slots_list_the_sessions(served):
    backend, graph, client, clock = served
    a, b, c = graph.session(), graph.session("bob"), graph.session()
    for session in (a, b, a, c):   # c takes b's KV slot: b, least recently used, is swapped
        session.complete("Once upon a time", **ASK)
        clock.advance(1.0)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# HELP wasi_nn_tokens_generated_total Tokens generated" in response.text
    got = samples(response.text)
    stats = backend.stats()
    engine = stats.engines[graph.handle]
    assert got["wasi_nn_requests_finished_total"] == engine["finished"] == 4
    assert got["wasi_nn_requests_failed_total"] == engine["failed"] == 0
    assert got["wasi_nn_requests_cancelled_total"] == 0
    assert got["wasi_nn_requests_timeouts_total"] == stats.timeouts == 0
    assert got["wasi_nn_prompt_tokens_prefilled_total"] == stats.prefill_tokens > 0
    assert got["wasi_nn_tokens_generated_total"] == stats.decode_tokens > 0
    assert got["wasi_nn_prompt_tokens_cached_total"] == stats.cache_hit_tokens > 0  # a's 2nd
    assert got["wasi_nn_queue_depth"] == stats.queue_depth == 0
    assert got["wasi_nn_kv_cells_used"] == stats.kv_cells_used > 0
    assert got["wasi_nn_kv_cells_total"] == stats.kv_cells_total == 2 * 128
    assert got["wasi_nn_sessions"] == stats.sessions == 3
    assert got["wasi_nn_sessions_resident"] == 2
    assert got["wasi_nn_sessions_offloaded"] == stats.sessions_offloaded == 1
    assert got["wasi_nn_offload_bytes"] == stats.offload_bytes > 0
    assert got["wasi_nn_kv_offloads_total"] >= 1
    assert got["wasi_nn_decode_tokens_per_second"] == pytest.approx(stats.tokens_per_second)
    assert got["wasi_nn_decode_tokens_per_second"] > 0
    assert all(name.startswith("wasi_nn_") for name in got)

    response = client.get("/slots")
    assert response.status_code == 200
    slots = {slot["id"]: slot for slot in response.json()}
    assert list(slots) == [a.handle, b.handle, c.handle]
    assert {slot["model"] for slot in slots.values()} == {"tiny"}
    assert slots[b.handle]["name"] == "bob" and slots[a.handle]["name"] is None
    kept, swapped, last = slots[a.handle], slots[b.handle], slots[c.handle]
    assert swapped["offloaded"] and swapped["seq_id"] is None and swapped["n_tokens"] == 0
    assert swapped["offloaded_tokens"] == len(b.state.offloaded_tokens) > 0
    for session, slot in ((a, kept), (c, last)):
        assert not slot["offloaded"] and slot["seq_id"] == session.state.seq_id is not None
        assert slot["n_tokens"] == len(session.state.kv_tokens) > 0
    assert all(slot["state"] == "idle" and not slot["is_processing"] for slot in slots.values())
    # last used, on the backend's (fake) clock: each ran one advance() before the next
    assert last["idle_seconds"] == pytest.approx(1.0)
    assert kept["idle_seconds"] == pytest.approx(2.0)
    assert swapped["idle_seconds"] == pytest.approx(3.0)
    assert kept["generated_tokens"] == 2 * swapped["generated_tokens"] > 0


def test_a_running_request_shows_busy(served):
    backend, graph, client, _ = served
    session = graph.session()
    stream = session.complete_stream("Once upon a time", temperature=0, ignore_eos=True,
                                     max_tokens=-1)
    next(iter(stream))   # generating now
    slot, = client.get("/slots").json()
    assert slot["state"] == "busy" and slot["is_processing"] and slot["seq_id"] is not None
    assert samples(client.get("/metrics").text)["wasi_nn_sessions_active"] == 1
    session.close()      # cancels it within one engine step
    stream.result()
    assert client.get("/slots").json() == []
    got = samples(client.get("/metrics").text)
    assert got["wasi_nn_requests_cancelled_total"] == got["wasi_nn_requests_finished_total"] == 1
