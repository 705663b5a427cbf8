"""Embedding arithmetic with no llama.cpp in it: which texts share a decode, and normalization.

``pack`` keeps every text whole inside one decode (llama.cpp pools per micro-batch, so a text
split over two decodes would be pooled over its last part only). ``normalize`` is llama.cpp's
common_embd_normalize: -1 none, 0 max-abs scaled to the int16 range, 1 taxicab, 2 euclidean (L2,
the default of llama.cpp's embedding example and of WasmEdge), p > 2 the p-norm.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pack(lengths: Sequence[int], *, max_tokens: int, max_texts: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped in order into decodes of at most ``max_tokens`` tokens and
    ``max_texts`` texts. Every length must be in [1, max_tokens]."""
    if max_tokens < 1 or max_texts < 1:
        raise ValueError(f"max_tokens={max_tokens} and max_texts={max_texts} must be >= 1")
    groups: list[list[int]] = []
    group: list[int] = []
    tokens = 0
    for index, length in enumerate(lengths):
        if not 1 <= length <= max_tokens:
            raise ValueError(f"text {index} has {length} tokens; a decode takes 1..{max_tokens}")
        if group and (tokens + length > max_tokens or len(group) == max_texts):
            groups.append(group)
            group, tokens = [], 0
        group.append(index)
        tokens += length
    if group:
        groups.append(group)
    return groups


def normalize(vectors: np.ndarray, mode: int) -> np.ndarray:
    """Each row of ``vectors`` (or the vector itself) scaled as llama.cpp's embd_normalize
    ``mode`` says; a zero vector stays zero. float32 in, float32 out."""
    data = np.asarray(vectors, dtype=np.float64)
    magnitude = np.abs(data)
    if mode == -1:
        return np.asarray(vectors, dtype=np.float32).copy()
    if mode == 0:
        scale = magnitude.max(axis=-1, keepdims=True) / 32760.0
    elif mode == 2:
        scale = np.sqrt((data * data).sum(axis=-1, keepdims=True))
    elif mode >= 1:
        # (sum |x|^p)^(1/p), computed on x / max|x| so that large p cannot overflow.
        peak = magnitude.max(axis=-1, keepdims=True)
        safe = np.where(peak > 0, peak, 1.0)
        scale = peak * ((magnitude / safe) ** mode).sum(axis=-1, keepdims=True) ** (1.0 / mode)
    else:
        raise ValueError(f"normalize mode {mode} is not -1, 0, 1, 2 or a p > 2")
    factor = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1.0), 0.0)
    return (data * factor).astype(np.float32)
