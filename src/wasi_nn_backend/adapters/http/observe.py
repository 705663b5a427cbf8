"""/health, /metrics and /slots: the HTTP server's observability routes, as llama-server's.

* ``GET /health``: 200 ``{"status": "ok"}`` while every model's engine runs; 503
  ``{"status": "error", "models": {alias: why}}`` once the backend is closed, a graph is
  unloaded or an engine thread has stopped.
* ``GET /metrics``: the Prometheus text format, read from ``backend.stats()`` at scrape time
  (a Collector on a registry of its own: nothing of the process's default registry). Names
  start with ``wasi_nn_``; counters end in ``_total``. Throughput: ``wasi_nn_tokens_generated``
  is a counter (``rate(wasi_nn_tokens_generated_total[1m])`` is tokens/s of wall time), and
  ``wasi_nn_decode_tokens_per_second`` is tokens decoded per second spent inside llama_decode
  over the backend's life (backend.stats().tokens_per_second, llama-server's
  predicted_tokens_seconds).
* ``GET /slots``: one entry per open session of the served models: its id, name, model alias,
  KV sequence (seq id, or null when it holds none: offloaded, evicted or never run), tokens in
  its KV sequence, busy/idle, offloaded (and how many tokens its saved state holds), when it
  was last used, and its token counters.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def routes(backend: Any, models: Mapping[str, Any]) -> list[Route]:
    """The observability routes for ``backend`` serving ``models`` (alias -> Graph)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackendCollector(backend))

    # Plain functions: Starlette runs them on its thread pool, so reading the backend (which
    # takes its lock for a moment) never holds up the event loop.
    def health(request: Request) -> JSONResponse:
        problems = health_problems(backend, models)
        if problems:
            return JSONResponse({"status": "error", "models": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def slots(request: Request) -> JSONResponse:
        return JSONResponse(slot_view(backend, models))

    return [Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/slots", slots, methods=["GET"])]


def health_problems(backend: Any, models: Mapping[str, Any]) -> dict[str, str]:
    """alias -> why it cannot serve; empty when all can."""
    if backend.closed:
        return {alias: "the backend is closed" for alias in models or ["*"]}
    problems = {}
    for alias, graph in models.items():
        if graph.closed:
            problems[alias] = "unloaded"
        elif not graph.engine.alive:
            problems[alias] = "its engine has stopped"
    return problems


def slot_view(backend: Any, models: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The open sessions of ``models``' graphs, oldest first (a reading: the engines keep
    running, so a session's fields can be one step apart)."""
    if backend.closed:
        return []
    aliases: dict[int, str] = {}
    for alias, graph in models.items():
        aliases.setdefault(id(graph), alias)
    now, wall = backend.clock.now(), time.time()
    view = []
    for session in backend.sessions:
        alias = aliases.get(id(session.graph))
        if alias is None or session.closed:
            continue
        state = session.state
        offloaded = state.offloaded_tokens
        idle = max(0.0, now - session.last_activity)
        busy = session.running
        view.append({
            "id": session.handle, "name": session.name, "model": alias,
            "graph": session.graph.handle,
            "seq_id": state.seq_id,
            "n_tokens": len(state.kv_tokens) if state.seq_id is not None else 0,
            "state": "busy" if busy else "idle", "is_processing": busy,
            "offloaded": offloaded is not None,
            "offloaded_tokens": len(offloaded) if offloaded is not None else 0,
            "last_used": round(wall - idle, 3), "idle_seconds": round(idle, 3),
            "prefilled_tokens": state.prefilled_tokens, "reused_tokens": state.reused_tokens,
            "generated_tokens": state.generated_tokens, "context_shifts": state.shifts,
        })
    return view


class BackendCollector(Collector):
    """backend.stats() as Prometheus metrics, read at every scrape."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        if self.backend.closed:
            return
        stats = self.backend.stats()
        engines = list(stats.engines.values())

        def engine_sum(key: str) -> float:
            return sum(engine.get(key, 0) for engine in engines)

        def counter(name: str, help: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"wasi_nn_{name}", help, value=value)

        def gauge(name: str, help: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"wasi_nn_{name}", help, value=value)

        resident = sum(1 for s in self.backend.sessions if s.state.seq_id is not None)
        # Requests: the engines of the models served now (one per graph).
        yield counter("requests_finished", "Requests that ended with a completion (stopped, "
                      "length, context full, timeout or cancelled)", engine_sum("finished"))
        yield counter("requests_failed", "Requests that ended with an error instead "
                      "(prompt too long, model unloaded, ...)", engine_sum("failed"))
        yield counter("requests_cancelled", "Requests cancelled while running (the client "
                      "went away or its session closed)", engine_sum("cancelled"))
        yield counter("requests_timeouts", "Requests ended by their deadline", stats.timeouts)
        yield counter("requests_rejected", "Requests refused as busy (the queue was full)",
                      stats.rejections)
        yield gauge("requests_running", "Requests admitted and generating now",
                    sum(engine["queue"].running for engine in engines))
        yield gauge("queue_depth", "Requests waiting for admission now", stats.queue_depth)
        yield counter("queue_warnings", "Times the queue reached queue_warning_threshold",
                      stats.queue_warnings)
        # Tokens.
        yield counter("prompt_tokens_prefilled", "Prompt tokens decoded (prefilled)",
                      stats.prefill_tokens)
        yield counter("prompt_tokens_cached", "Prompt tokens reused from a session's KV "
                      "cache instead of prefilled", stats.cache_hit_tokens)
        yield counter("tokens_generated", "Tokens generated and decoded (a request's last "
                      "sampled token is not decoded); rate() of it is tokens/s",
                      stats.decode_tokens)
        yield counter("decode_seconds", "Seconds spent inside llama_decode",
                      engine_sum("decode_seconds"))
        yield gauge("decode_tokens_per_second", "Generated tokens per second spent decoding, "
                    "over the backend's life (tokens_generated / decode_seconds)",
                    stats.tokens_per_second)
        # KV cache and sessions.
        yield gauge("kv_cells_used", "KV cache cells holding session tokens",
                    stats.kv_cells_used)
        yield gauge("kv_cells_total", "KV cache cells in the contexts", stats.kv_cells_total)
        yield gauge("kv_cache_usage_ratio", "kv_cells_used / kv_cells_total",
                    stats.kv_cells_used / stats.kv_cells_total if stats.kv_cells_total else 0.0)
        yield gauge("sessions", "Open sessions", stats.sessions)
        yield gauge("sessions_active", "Sessions with a request queued or generating",
                    stats.sessions_active)
        yield gauge("sessions_idle", "Sessions with no request", stats.sessions_idle)
        yield gauge("sessions_resident", "Sessions holding a KV sequence now", resident)
        yield gauge("sessions_offloaded", "Sessions whose KV state is swapped out to host RAM",
                    stats.sessions_offloaded)
        yield gauge("offload_bytes", "Host RAM held by the swapped-out KV states",
                    stats.offload_bytes)
        yield counter("kv_offloads", "KV sequences swapped out to host RAM",
                      engine_sum("offloads"))
        yield counter("kv_restores", "KV sequences swapped back in", engine_sum("restores"))
        yield counter("kv_restore_failures", "Swapped sessions whose state was not restored "
                      "(prefilled again)", stats.restore_failures)
        yield counter("context_shifts", "Context shifts (a full sequence's middle dropped)",
                      engine_sum("shifts"))
        # Models.
        yield gauge("graphs", "Graphs (served model slots) loaded", stats.graphs)
        yield gauge("models_loaded", "Models in memory, swapped-out ones still serving "
                    "included", stats.models_loaded)
        yield gauge("model_memory_bytes", "The loaded models' estimated memory footprint",
                    stats.model_memory_bytes)
