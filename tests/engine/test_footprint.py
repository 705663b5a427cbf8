"""engine.footprint: the memory estimate made from the GGUF header before a load, checked against
what llama.cpp reports it allocated (its log lines) for the same settings."""
from __future__ import annotations

import logging
import re

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend.testing.tiny_model import write_tiny_llama
from wasi_nn_backend.config import ModelSettings
from wasi_nn_backend.engine.footprint import estimate_footprint
from wasi_nn_backend.llm.gguf_header import read_gguf_header

MIB = 1024 * 1024


def _reported(caplog, what: str) -> float:
    """The MiB llama.cpp logged for ``what`` (KV or compute), summed over its buffers."""
    pattern = re.compile(rf"CPU {what} buffer size =\s+([0-9.]+) MiB")
    return sum(float(m.group(1)) for r in caplog.records
               if (m := pattern.search(r.getMessage())))


@pytest.fixture(scope="module")
def wide_model_path(tmp_path_factory):
    """Wide FFN, 8 KV heads: the FFN activations, not the logits, dominate compute."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("wide") / "wide.gguf", n_embd=256,
                                n_layer=2, n_head=8, n_head_kv=8, n_ff=1024))


@pytest.mark.parametrize("wide,settings", [
    (False, {"n_ctx": 512, "n_seq_max": 4, "flash_attn": "on"}),
    (False, {"n_ctx": 1024, "n_seq_max": 2, "flash_attn": "off"}),
    (True, {"n_ctx": 256, "n_seq_max": 3, "flash_attn": "off", "cache_type_k": "q8_0",
            "n_batch": 128}),              # head size 32: a quantized K fits (limits.py)
    (False, {"n_ctx": 16, "n_seq_max": 8, "n_batch": 64}),   # streams padded to 256 cells
    (False, {"n_ctx": 20, "n_seq_max": 3, "kv_unified": True, "n_batch": 64}),
    (False, {"n_ctx": 256, "n_seq_max": 2, "cache_type_k": "f32", "cache_type_v": "f32"}),
    (False, {"n_ctx": 256, "n_seq_max": 4, "kv_unified": True, "flash_attn": "off"}),
    (True, {"n_ctx": 2048, "n_seq_max": 1, "flash_attn": "on"}),
    (True, {"n_ctx": 2048, "n_seq_max": 2, "flash_attn": "off"}),
    (True, {"n_ctx": 256, "n_seq_max": 2, "flash_attn": "off", "n_batch": 256}),
])
def test_estimate_matches_what_llama_cpp_allocates(tiny_model_path, wide_model_path, caplog,
                                                   wide, settings):
    path = wide_model_path if wide else tiny_model_path
    header = read_gguf_header(path)
    estimate = estimate_footprint(header, ModelSettings(**settings))
    with caplog.at_level(logging.DEBUG, logger="wasi_nn_backend.llama"):
        with Backend({"logging": {"level": "error"}}) as backend:
            graph = backend.load(path, {"model": settings})
            assert graph.model.size_bytes == estimate.weights_bytes   # F32: file = memory
    kv = _reported(caplog, "KV")
    compute = _reported(caplog, "compute")
    assert estimate.kv_cache_bytes / MIB == pytest.approx(kv, abs=0.01)
    assert 0.8 * compute <= estimate.compute_bytes / MIB <= 1.3 * compute


def test_kv_cache_formula(tiny_model_path):
    # tiny model: 2 layers, n_embd 64, 4 heads (head dim 16), 2 KV heads
    header = read_gguf_header(tiny_model_path)
    estimate = estimate_footprint(header, ModelSettings(n_ctx=1024, n_seq_max=3))
    assert estimate.kv_cache_bytes == 1024 * 3 * 2 * (16 * 2 + 16 * 2) * 2   # f16 K and V
    # llama.cpp pads each sequence's stream to 256 cells: 16 x 256 sequences take 65536 cells
    padded = estimate_footprint(header, ModelSettings(n_ctx=16, n_seq_max=256, n_batch=256))
    assert padded.kv_cache_bytes == 256 * 256 * 2 * (16 * 2 + 16 * 2) * 2
    unified = estimate_footprint(header, ModelSettings(n_ctx=1000, n_seq_max=3, kv_unified=True))
    assert unified.kv_cache_bytes == 3072 * 2 * (16 * 2 + 16 * 2) * 2      # 3000 padded
    assert estimate.total_bytes == (estimate.weights_bytes + estimate.kv_cache_bytes
                                    + estimate.compute_bytes)
    assert set(estimate.as_mb()) == {"weights_mb", "kv_cache_mb", "compute_mb", "total_mb"}
