"""What a model will take in memory once loaded, estimated from its GGUF header and the load
settings, before anything is loaded: weights + KV cache + compute buffers.

    KV cache = cells * sum over layers (n_embd_k_gqa * bytes(cache_type_k)
                                       + n_embd_v_gqa * bytes(cache_type_v))
    cells = n_ctx * n_seq_max, padded as llama.cpp pads it (to 256, per stream when split)
    n_embd_k_gqa = key_length * n_head_kv (key_length defaults to n_embd / n_head)

The weights are the file's tensor bytes. Compute buffers follow llama.cpp's worst-case graph
for n_ubatch tokens (see _compute_bytes; within 25 % of what llama.cpp reports on CPU across
context sizes, batch sizes, widths and flash attention on or off: tests/engine/test_footprint.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ModelSettings
from ..config.limits import KV_PAD
from ..errors import InvalidEncoding
from ..llm.gguf_header import GgufHeader

# Bytes per KV cache element (quantized types: block bytes / block size).
CACHE_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
_MB = 1024 * 1024


@dataclass(frozen=True)
class Footprint:
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes

    def as_mb(self) -> dict[str, float]:
        """The four figures in MiB, rounded to 0.01 (for info and messages)."""
        return {"weights_mb": mb(self.weights_bytes), "kv_cache_mb": mb(self.kv_cache_bytes),
                "compute_mb": mb(self.compute_bytes), "total_mb": mb(self.total_bytes)}


def mb(n_bytes: int) -> float:
    return round(n_bytes / _MB, 2)


# Far beyond any real model (the largest have ~200 layers): a header claiming more is damaged
# or hostile, and sizing per-layer lists by it would hang or exhaust memory.
MAX_LAYERS = 4096


def estimate_footprint(header: GgufHeader, settings: ModelSettings) -> Footprint:
    n_layer = _int(header.arch_value("block_count"))
    if not 0 <= n_layer <= MAX_LAYERS:
        raise InvalidEncoding(f"the GGUF header claims {n_layer} layers (at most {MAX_LAYERS} "
                              "are plausible): the file is damaged")
    n_embd = _int(header.arch_value("embedding_length"))
    n_head = _per_layer(header.arch_value("attention.head_count"), n_layer)
    n_head_kv = _per_layer(header.arch_value("attention.head_count_kv"), n_layer) or n_head
    n_ff = max(_per_layer(header.arch_value("feed_forward_length"), n_layer), default=0)
    n_vocab = header.array_lengths.get("tokenizer.ggml.tokens") \
        or _int(header.arch_value("vocab_size"))
    k_bytes = CACHE_TYPE_BYTES[settings.cache_type_k]
    v_bytes = CACHE_TYPE_BYTES[settings.cache_type_v]
    unified = settings.embedding or (settings.kv_unified and not settings.deterministic)
    if settings.embedding:  # one decode's worth of cells (engine/contexts.py)
        cells = min(settings.n_ubatch or settings.n_batch, settings.n_ctx)
    else:
        cells = settings.n_ctx * settings.n_seq_max
    # llama.cpp pads the context to 256 cells, and each sequence's stream too when they are
    # split: n_ctx 16 with 256 sequences allocates 65536 cells, not 4096.
    cells = _pad(cells)
    n_streams = 1 if unified else settings.n_seq_max
    stream_cells = _pad(cells // n_streams)
    cells = stream_cells * n_streams
    per_cell = 0.0
    for layer, heads_kv in enumerate(n_head_kv):
        heads = n_head[layer] if layer < len(n_head) else 0
        head_dim = n_embd // heads if heads else 0
        key_length = _int(header.arch_value("attention.key_length")) or head_dim
        value_length = _int(header.arch_value("attention.value_length")) or head_dim
        per_cell += heads_kv * (key_length * k_bytes + value_length * v_bytes)
    n_kv = stream_cells                                 # cells one token's attention reads
    n_ubatch = min(settings.n_ubatch or settings.n_batch, settings.n_batch, cells)
    compute = _compute_bytes(n_ubatch, n_kv, flash=settings.flash_attn != "off",
                             n_head=max(n_head, default=0), n_ff=n_ff, n_embd=n_embd,
                             n_vocab=n_vocab)
    compute += 4 * settings.n_seq_max * n_vocab        # the logits output buffer
    return Footprint(header.tensor_bytes, int(cells * per_cell), int(compute))


def _compute_bytes(n_ubatch: int, n_kv: int, *, flash: bool, n_head: int, n_ff: int,
                   n_embd: int, n_vocab: int) -> int:
    """llama.cpp's worst-case graph for n_ubatch tokens: the KQ mask lives through every
    layer, beside the larger of the FFN activations and the attention scores (without flash
    attention); at the end the logits take over; plus a few hidden-state rows."""
    mask = n_ubatch * n_kv * (2 if flash else 4)
    scores = 0 if flash else 5 * n_ubatch * n_kv * n_head
    ffn = 16 * n_ubatch * n_ff
    logits = 4 * n_ubatch * n_vocab
    return max(mask + max(ffn, scores), logits) + 8 * n_ubatch * n_embd


def _pad(cells: int) -> int:
    return -(-cells // KV_PAD) * KV_PAD


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, list):   # a per-layer array where one value was expected
        return max((v for v in value if isinstance(v, int)), default=0)
    return 0


def _per_layer(value: Any, n_layer: int) -> list[int]:
    """A hyperparameter that may be one number or one per layer, as one per layer."""
    if isinstance(value, list):
        return [_int(v) for v in value[:n_layer]]
    return [_int(value)] * n_layer if value is not None else []
