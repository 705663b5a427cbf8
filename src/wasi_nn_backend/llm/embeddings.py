"""Embeddings out of a Context made with ``embeddings=True``, and the pooling a GGUF names
(the pooling names themselves are pooling.py's).

llama.cpp pools inside llama_decode, per sequence (mean / cls / last), and keeps the pooled
vectors until the next decode: llama_get_embeddings_seq. With pooling ``none`` it keeps one
vector per output token instead: llama_get_embeddings_ith. Both answer NULL (they never abort)
for a sequence or index the last decode did not produce; that is raised here.

Pooling happens per micro-batch: a sequence split over two ubatches is pooled over the last one
only, so callers must keep every decode within n_ubatch tokens (one ubatch) on a unified KV
(split KV streams cut sequences of unequal lengths into equal parts per ubatch).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors
from .pooling import pooling_name

if TYPE_CHECKING:
    from .context import Context
    from .model import Model


def gguf_pooling(model: Model) -> str | None:
    """The pooling the GGUF names (``{arch}.pooling_type``: embedding models have one; a
    generative model has none, and an explicit ``none`` counts as none), or None."""
    value = model.metadata.get(f"{model.architecture}.pooling_type")
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise errors.InvalidEncoding(f"the GGUF's pooling_type {value!r} is not a number") from None
    return None if number == C.LLAMA_POOLING_TYPE_NONE else pooling_name(number)


def pooled(context: Context, seq: int) -> np.ndarray:
    """A float32 copy of sequence ``seq``'s pooled embedding from the last decode."""
    pointer = C.llama_get_embeddings_seq(context.handle, int(seq))
    if not pointer:
        raise errors.BackendRuntimeError(
            f"llama.cpp has no pooled embedding for sequence {seq} (pooling is "
            f"{context.pooling}; was the sequence in the last decode?)")
    return np.ctypeslib.as_array(pointer, shape=(context.model.n_embd_out,)).copy()


def token(context: Context, batch_index: int) -> np.ndarray:
    """A float32 copy of the embedding of the token at ``batch_index`` in the last decode."""
    if not context.has_logits(batch_index):
        raise errors.InvalidArgument(f"batch index {batch_index} has no output from the last decode")
    pointer = C.llama_get_embeddings_ith(context.handle, int(batch_index))
    if not pointer:
        raise errors.BackendRuntimeError(f"llama.cpp has no embedding for index {batch_index}")
    return np.ctypeslib.as_array(pointer, shape=(context.model.n_embd_out,)).copy()
