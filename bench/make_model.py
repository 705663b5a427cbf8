"""The benchmark model: a ~250M-parameter llama (n_embd 1024, 16 layers, 16 query heads over 4
KV heads, n_ff 2816, vocabulary 32000) with seeded random weights, written as F32 with the gguf
package and quantized to Q8_0 by llama.cpp (llama_model_quantize).

Run: .venv/bin/python bench/make_model.py [path]   (default bench/.models/bench-250m-q8_0.gguf;
skips the work when the file is there). Other bench scripts call model_path().
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from wasi_nn_backend.testing.tiny_model import write_tiny_llama

DEFAULT = Path(__file__).parent / ".models" / "bench-250m-q8_0.gguf"
SHAPE = {"n_embd": 1024, "n_layer": 16, "n_head": 16, "n_head_kv": 4, "n_ff": 2816,
         "n_vocab": 32000, "n_ctx_train": 4096}


def model_path(path: str | Path = DEFAULT) -> str:
    """The benchmark model's path, written first when missing."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        partial = path.with_name(path.name + ".partial")
        write_tiny_llama(partial, seed=250, quant="q8_0", **SHAPE)
        partial.rename(path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
    return str(path)


if __name__ == "__main__":
    print(model_path(*sys.argv[1:2]))
