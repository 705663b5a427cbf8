"""``wasi-nn-backend serve``: load the models named on the command line and run uvicorn.

A model is named as ``--nn-preload`` names one, ``ALIAS:GGML:AUTO:PATH``, or by a plain path
(its alias is the file's stem). The spelling is read here again rather than imported from
adapters.wasm: edges never import one another, and that package needs wasmtime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...api import Backend, Graph
from ...config import parse_config
from ...errors import InvalidArgument

ENCODINGS = ("GGML",)
TARGETS = ("CPU", "GPU", "TPU", "AUTO")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """(alias, path) for ``ALIAS:GGML:TARGET:PATH`` or a plain path."""
    parts = spec.split(":", 3)
    if len(parts) == 4 and parts[1].upper() in ENCODINGS and parts[2].upper() in TARGETS:
        if not parts[0] or not parts[3]:
            raise InvalidArgument(f"model {spec!r} is not ALIAS:GGML:AUTO:PATH")
        return parts[0], parts[3]
    return Path(spec).stem, spec


def server_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with backend.max_concurrent = model.n_seq_max unless it sets max_concurrent
    itself: a server's clients should be able to fill every KV sequence (the library's default,
    10, left 6 of 16 benchmark clients queued behind 16 sequences)."""
    def sets(value: Any) -> bool:
        if isinstance(value, dict):
            return any(key == "max_concurrent" or sets(item) for key, item in value.items())
        return False
    if sets(config):
        return config
    sequences = parse_config(config)[0].model.n_seq_max
    return {**config, "backend": {**config.get("backend", {}), "max_concurrent": sequences}}


def load_models(backend: Backend, specs: list[str], config: dict[str, Any] | None = None,
                embedding_specs: list[str] = ()) -> dict[str, Graph]:
    """alias -> graph, each loaded with ``config`` (a JSON object); ``embedding_specs`` load
    with model.embedding on too (the graphs /v1/embeddings serves)."""
    config = config or {}
    embedding = {**config, "model": {**config.get("model", {}), "embedding": True}}
    models: dict[str, Graph] = {}
    for spec, load_config in [(s, config) for s in specs] + [(s, embedding)
                                                             for s in embedding_specs]:
        alias, path = parse_model_spec(spec)
        if alias in models:
            raise InvalidArgument(f"two models are named {alias!r}")
        models[alias] = backend.load(path, load_config or None)
    return models


def serve(backend: Backend, models: dict[str, Graph], *, host: str = "127.0.0.1",
          port: int = 8080, api_key: str | None = None, pool_size: int | None = None,
          log_level: str = "warning") -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    import uvicorn

    from .app import create_app
    app = create_app(backend, models, api_key=api_key, pool_size=pool_size)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
