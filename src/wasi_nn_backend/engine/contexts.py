"""Which llama_context a graph gets: a generating one (a KV sequence of n_ctx tokens per slot)
or, for ``embedding: true``, an embedding one (see embedder.py for why it looks as it does)."""
from __future__ import annotations

from ..config import ModelSettings
from ..errors import UnsupportedOperation
from ..llm.context import Context
from ..llm.embeddings import gguf_pooling
from ..llm.lib import supports_gpu_offload
from ..llm.model import Model


def generation_context(model: Model, settings: ModelSettings, threads: int) -> Context:
    """With backend sampling, one output a sequence per decode (the engine never asks for more):
    llama.cpp sizes the sampling graph by it."""
    return Context(
        model, n_ctx=settings.n_ctx * settings.n_seq_max, n_batch=settings.n_batch,
        n_ubatch=settings.n_ubatch, n_seq_max=settings.n_seq_max, n_threads=threads,
        n_threads_batch=settings.threads_batch or threads, flash_attn=settings.flash_attn,
        kv_unified=settings.kv_unified and not settings.deterministic,
        type_k=settings.cache_type_k, type_v=settings.cache_type_v,
        outputs_per_seq=1 if samples_in_graph(settings) else 0)


def _switch(value: str, settings: ModelSettings) -> bool:
    """An "auto" / "on" / "off" setting: "auto" is on with layers offloaded to a GPU."""
    if value == "auto":
        return settings.n_gpu_layers != 0 and supports_gpu_offload()
    return value == "on"


def defers_output(settings: ModelSettings) -> bool:
    """Asynchronous output (model.async_output): "auto" turns it on where llama_decode returns
    before the computation ends, i.e. with layers offloaded to a GPU; on a CPU decode
    computes before it returns, and emitting a step's text right after sampling shows it a
    step sooner for the same throughput."""
    return _switch(settings.async_output, settings)


def samples_in_graph(settings: ModelSettings) -> bool:
    """Backend sampling (model.backend_sampling): "auto" turns it on with layers on a GPU,
    where the logits then stay there; on a CPU the graph's sampling ops cost more than the
    host's (bench/backend_sampling.py)."""
    return _switch(settings.backend_sampling, settings)


def embedding_context(model: Model, settings: ModelSettings, threads: int) -> Context:
    """Embeddings on, the pooling resolved (the setting, else the GGUF's, else mean), a unified
    KV just big enough for one decode of min(n_ctx, n_ubatch) tokens, at most that many sequences."""
    pooling = settings.pooling or gguf_pooling(model) or "mean"
    if pooling == "rank":
        raise UnsupportedOperation("this GGUF pools with 'rank' (a reranking model), which is not "
                                   "supported; set model.pooling to mean, cls, last or none")
    n_ubatch = min(settings.n_ubatch or settings.n_batch, settings.n_ctx)
    # A decode holds at most n_ubatch texts (one token each at least), and llama.cpp asserts
    # n_seq_max <= n_batch (config/limits.py): more sequences could never be used.
    return Context(model, n_ctx=n_ubatch, n_batch=n_ubatch, n_ubatch=n_ubatch,
                   n_seq_max=min(settings.n_seq_max, n_ubatch), n_threads=threads,
                   n_threads_batch=settings.threads_batch or threads,
                   flash_attn=settings.flash_attn, kv_unified=True, type_k=settings.cache_type_k,
                   type_v=settings.cache_type_v, embeddings=True, pooling=pooling)
