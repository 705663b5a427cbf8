"""Loading one GGUF file for serving: read its header, load it, start its engine, time it, and
record the facts a model info reports (read once, so info never calls into a freed model)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..core.clock import Clock
from ..llm.gguf_header import GgufHeader, read_gguf_header
from .base import EngineBase
from .embedding import EmbeddingEngine
from .files import file_type_name, load_model
from .generating import GeneratingEngine
from .footprint import Footprint, estimate_footprint

__all__ = ["Footprint", "GgufHeader", "Started", "estimate_footprint", "read_gguf_header",
           "start_engine", "start_model"]


@dataclass(frozen=True)
class Started:
    model: Any              # llm.Model
    engine: EngineBase      # a GeneratingEngine or an EmbeddingEngine (start_engine)
    load_seconds: float     # loading the weights and creating the context (wall time)
    facts: dict[str, Any]   # what Graph.info and the usage JSON report about the model


def start_model(path: str, header: GgufHeader, config: Config, *, clock: Clock, name: str,
                progress: Callable[[float], Any] | None = None) -> Started:
    """Load ``path`` and start its engine; the model is freed again if the engine fails."""
    began = time.perf_counter()
    model = load_model(path, config.model, progress)
    try:
        engine = start_engine(model, config, clock=clock, name=name)
    except BaseException:
        model.close()
        raise
    seconds = time.perf_counter() - began
    return Started(model, engine, seconds, model_facts(model, header))


def start_engine(model: Any, config: Config, *, clock: Clock | None = None,
                 name: str = "model") -> EngineBase:
    """The engine kind the config asks for: embeddings (``model.embedding``) or generation."""
    kind = EmbeddingEngine if config.model.embedding else GeneratingEngine
    return kind(model, config, clock=clock, name=name)


def model_facts(model: Any, header: GgufHeader) -> dict[str, Any]:
    metadata = model.metadata
    return {
        "name": metadata.get("general.name", ""),
        "architecture": model.architecture,
        "description": model.description,
        "n_params": model.n_params,
        "n_layer": model.n_layer,
        "n_embd": model.n_embd,
        "n_vocab": model.n_vocab,
        "n_ctx_train": model.n_ctx_train,
        "quantization": file_type_name(metadata.get("general.file_type")),
        "file_size": header.file_size,
        "size_bytes": model.size_bytes,
        "chat_template": model.chat_template,
    }
