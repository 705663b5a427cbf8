"""Model files, beside the engine: loading one (llm.Model), naming its quantization,
quantizing one, and llama.cpp's build facts for usage reports."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..config import ModelSettings
from ..llm import lib
from ..llm.model import Model


def load_model(path: str, settings: ModelSettings,
               progress: Callable[[float], Any] | None = None) -> Model:
    """Load a GGUF file for an engine (ModelNotFound, InvalidEncoding, runtime_error);
    ``progress(fraction)`` is called as it loads (return False to cancel)."""
    return Model.load(path, n_gpu_layers=settings.n_gpu_layers, use_mmap=settings.use_mmap,
                      progress=progress)


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


def quantize_model(source: str | os.PathLike, target: str | os.PathLike, kind: str) -> Any:
    """Write ``source`` quantized to ``kind`` (q8_0, q4_0, ...) at ``target`` (llama.cpp)."""
    return lib.quantize_model(source, target, kind)


def build_info() -> dict[str, Any]:
    """llama.cpp build facts for usage reports."""
    return lib.build_info()
