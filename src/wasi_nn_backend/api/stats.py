"""backend.stats(): one frozen record of what a Backend is doing, summed over its models.

Readings are taken without stopping the engines, so numbers that change together (e.g. queue
depth and running requests) can be one step apart."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .graph import Graph
    from .session import Session


@dataclass(frozen=True)
class BackendStats:
    graphs: int
    sessions: int
    sessions_active: int        # with a request queued or generating
    sessions_idle: int
    sessions_offloaded: int     # KV state held in host RAM
    queue_depth: int            # requests waiting for admission
    queue_warnings: int         # times the queue reached queue_warning_threshold
    rejections: int             # requests refused with busy
    timeouts: int               # requests ended by their deadline
    kv_cells_used: int
    kv_cells_total: int
    offload_bytes: int          # host RAM those offloaded sessions hold
    prefill_tokens: int
    decode_tokens: int
    cache_hit_tokens: int       # prompt tokens reused from a session's KV instead of prefilled
    tokens_per_second: float    # generated tokens per second of decoding
    engines: dict[int, dict[str, Any]] = field(default_factory=dict)  # graph -> model served now
    models_loaded: int = 0      # models in memory: one per graph, plus swapped-out ones
    model_memory_bytes: int = 0  # their estimated footprint (memory.max_model_memory_mb)
    restore_failures: int = 0   # swapped sessions whose KV state was not restored: prefilled


def collect(graphs: list[Graph], sessions: list[Session], model_memory_bytes: int = 0
            ) -> BackendStats:
    totals = {"queue_depth": 0, "queue_warnings": 0, "rejections": 0, "timeouts": 0,
              "kv_used": 0, "kv_total": 0, "offload_bytes": 0, "prefill": 0, "decode": 0,
              "reused": 0, "decode_seconds": 0.0, "restore_failures": 0}
    engines: dict[int, dict[str, Any]] = {}
    loaded = [(graph, model) for graph in graphs for model in graph.loaded_models()
              if not model.freed]
    for graph, model in loaded:
        readings = model.engine.readings()
        counters, queue = readings.counters, readings.queue
        used, total = readings.kv_cells_used, readings.kv_cells_total
        totals["queue_depth"] += queue.waiting
        totals["queue_warnings"] += queue.queue_warnings_total
        totals["rejections"] += queue.rejected_total
        totals["timeouts"] += counters["timeouts"]
        totals["kv_used"] += used
        totals["kv_total"] += total
        totals["offload_bytes"] += readings.offload_bytes
        totals["prefill"] += counters["prefill_tokens"]
        totals["decode"] += counters["decode_tokens"]
        totals["reused"] += counters["reused_tokens"]
        totals["decode_seconds"] += counters["decode_seconds"]
        totals["restore_failures"] += counters["restore_failures"]
        if model is graph.current:
            engines[graph.handle] = {**counters, "queue": queue}
    active = sum(1 for s in sessions if s.running)
    swapped = sum(1 for s in sessions if s.state.offloaded_tokens is not None)
    seconds = totals["decode_seconds"]
    return BackendStats(
        graphs=len(graphs), sessions=len(sessions), sessions_active=active,
        sessions_idle=len(sessions) - active, sessions_offloaded=swapped,
        queue_depth=totals["queue_depth"], queue_warnings=totals["queue_warnings"],
        rejections=totals["rejections"], timeouts=totals["timeouts"],
        kv_cells_used=totals["kv_used"], kv_cells_total=totals["kv_total"],
        offload_bytes=totals["offload_bytes"], prefill_tokens=totals["prefill"],
        decode_tokens=totals["decode"], cache_hit_tokens=totals["reused"],
        tokens_per_second=totals["decode"] / seconds if seconds > 0 else 0.0, engines=engines,
        models_loaded=len(loaded), model_memory_bytes=model_memory_bytes,
        restore_failures=totals["restore_failures"])
