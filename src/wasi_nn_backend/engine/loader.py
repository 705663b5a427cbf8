"""Loading one GGUF file for serving: read its header, load it (llm.Model), start the engine kind
its config asks for, time it, and record the facts a model info reports (read once, so info
never calls into a freed model)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config, ModelSettings
from ..core.clock import Clock
from ..llm.gguf_header import GgufHeader, read_gguf_header
from ..llm.model import Model
from .base import EngineBase
from .embedding import EmbeddingEngine
from .footprint import Footprint, estimate_footprint
from .generating import GeneratingEngine

__all__ = ["Footprint", "GgufHeader", "Started", "estimate_footprint", "read_gguf_header",
           "start_engine", "start_model"]


@dataclass(frozen=True)
class Started:
    model: Any              # llm.Model
    engine: EngineBase      # a GeneratingEngine or an EmbeddingEngine (start_engine)
    load_seconds: float     # loading the weights and creating the context (wall time)
    facts: dict[str, Any]   # what Graph.info and the usage JSON report about the model


def load_model(path: str, settings: ModelSettings,
               progress: Callable[[float], Any] | None = None) -> Model:
    """Load a GGUF file for an engine (ModelNotFound, InvalidEncoding, runtime_error);
    ``progress(fraction)`` is called as it loads (return False to cancel)."""
    return Model.load(path, n_gpu_layers=settings.n_gpu_layers, use_mmap=settings.use_mmap,
                      progress=progress)


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


# llama_ftype values (llama.h) of the files people meet most.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
               10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
               15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def file_type_name(value: str | None) -> str:
    """The quantization a GGUF's general.file_type names (unknown when absent)."""
    try:
        return _FILE_TYPES.get(int(value), f"type {value}") if value is not None else "unknown"
    except ValueError:
        return str(value)
