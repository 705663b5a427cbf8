"""The llama_context_params a Context is made with, validated: the last gate before
llama_init_from_model for every caller (the engine, and direct users of llm.Context). A
setting llama.cpp would answer with GGML_ASSERT/GGML_ABORT (the process dies) is an
exception here instead; config/limits.py has the table of checks and the asserts they prevent.
"""
from __future__ import annotations

import operator
import os
import re

import llama_cpp.llama_cpp as C

from .. import errors
from ..config.limits import GGML_MAX_N_THREADS, MAX_CONTEXT_CELLS, QUANT_BLOCK
from .pooling import pooling_param
from .model import Model

KV_TYPES = {"f32": C.GGML_TYPE_F32, "f16": C.GGML_TYPE_F16,
            "q8_0": C.GGML_TYPE_Q8_0, "q4_0": C.GGML_TYPE_Q4_0}
_FLASH = {"auto": C.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": C.LLAMA_FLASH_ATTN_TYPE_ENABLED,
          "off": C.LLAMA_FLASH_ATTN_TYPE_DISABLED}


def index(name: str, value: object) -> int:
    try:
        return operator.index(value)
    except TypeError as exc:
        raise errors.InvalidArgument(f"{name} must be an integer, got {value!r}") from exc


def context_params(*, n_ctx: int, n_batch: int, n_ubatch: int | None,
                   n_seq_max: int, n_threads: int | None, n_threads_batch: int | None,
                   flash_attn: str | bool, kv_unified: bool, type_k: str, type_v: str,
                   no_perf: bool, embeddings: bool, pooling: str | None,
                   outputs_per_seq: int = 0) -> C.llama_context_params:
    """Validated llama_context_params (InvalidArgument / BackendRuntimeError if impossible).
    ``n_ctx`` is the total KV size (0 = the model's training context is resolved by Context).
    ``outputs_per_seq``: the most outputs one sequence has in a decode (0 = n_batch); backend
    samplers size their graph by it."""
    max_seq = int(C.llama_max_parallel_sequences())
    if not 1 <= index("n_seq_max", n_seq_max) <= max_seq:
        raise errors.BackendRuntimeError(f"n_seq_max must be in [1, {max_seq}], got {n_seq_max}")
    if not 1 <= index("n_ctx", n_ctx) <= MAX_CONTEXT_CELLS \
            or not 1 <= index("n_batch", n_batch) <= 1 << 20:
        raise errors.InvalidArgument(f"impossible n_ctx={n_ctx} / n_batch={n_batch} (n_ctx "
                                     f"in [1, {MAX_CONTEXT_CELLS}], n_batch in [1, {1 << 20}])")
    ubatch = n_batch if n_ubatch is None else index("n_ubatch", n_ubatch)
    if not 1 <= ubatch <= n_batch:
        raise errors.InvalidArgument(f"n_ubatch must be in [1, n_batch={n_batch}], got {ubatch}")
    if n_seq_max > min(n_ctx, n_batch):
        # output_reserve: GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max) aborts.
        raise errors.InvalidArgument(
            f"n_seq_max={n_seq_max} exceeds min(n_ctx={n_ctx}, n_batch={n_batch}): llama.cpp "
            "reserves one output row per sequence in a batch of that many tokens")
    if isinstance(flash_attn, bool):
        flash_attn = "on" if flash_attn else "off"
    if flash_attn not in _FLASH or type_k not in KV_TYPES or type_v not in KV_TYPES:
        raise errors.InvalidArgument(
            f"bad flash_attn={flash_attn!r} / type_k={type_k!r} / type_v={type_v!r}")
    if flash_attn == "off" and type_v not in ("f32", "f16"):
        # llama.cpp refuses a quantized V cache without flash attention (NULL context).
        raise errors.InvalidArgument(f"type_v={type_v} needs flash_attn 'auto' or 'on'")
    cpus = min(os.cpu_count() or 1, GGML_MAX_N_THREADS)   # the default: every CPU ggml takes
    threads = cpus if n_threads is None else index("n_threads", n_threads)
    threads_batch = threads if n_threads_batch is None else index("n_threads", n_threads_batch)
    if not (1 <= threads <= GGML_MAX_N_THREADS and 1 <= threads_batch <= GGML_MAX_N_THREADS):
        raise errors.InvalidArgument(f"thread counts must be in [1, {GGML_MAX_N_THREADS}], got "
                                     f"{threads} / {threads_batch}")
    params = C.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, ubatch
    params.n_seq_max = n_seq_max
    params.n_threads, params.n_threads_batch = threads, threads_batch
    params.flash_attn_type = _FLASH[flash_attn]
    params.type_k, params.type_v = KV_TYPES[type_k], KV_TYPES[type_v]
    params.kv_unified = bool(kv_unified)
    params.no_perf = bool(no_perf)
    params.n_outputs_max_per_seq = max(0, min(index("outputs_per_seq", outputs_per_seq), n_batch))
    params.embeddings = bool(embeddings)
    params.pooling_type = pooling_param(pooling)
    return params


def _head_sizes(model: Model) -> tuple[int, int] | None:
    """(K, V) head size of every layer, from the GGUF (key_length / value_length, else
    n_embd / n_head); None when the header does not say it as one number."""
    metadata, arch = model.metadata, model.architecture
    try:
        heads = int(metadata.get(f"{arch}.attention.head_count", "0"))
        default = model.n_embd // heads if heads > 0 else 0
        k = int(metadata.get(f"{arch}.attention.key_length", default))
        v = int(metadata.get(f"{arch}.attention.value_length", default))
    except ValueError:  # a per-layer array
        return None
    return (k, v) if k > 0 and v > 0 else None


def check_cache_types(model: Model, type_k: str, type_v: str) -> None:
    """A quantized cache type must tile every head in whole blocks: with flash attention
    llama.cpp refuses it (NULL context), without it a quantized K gives wrong logits."""
    sizes = _head_sizes(model)
    if sizes is None:
        return
    for name, kind, size in (("type_k", type_k, sizes[0]), ("type_v", type_v, sizes[1])):
        block = QUANT_BLOCK.get(kind)
        if block and size % block:
            raise errors.InvalidArgument(
                f"{name} (model.cache_{name}) {kind} needs a head size that is a multiple of "
                f"{block}; this model's is {size}: use f16 or f32")


def quantized_k_can_shift(model: Model, type_k: str) -> bool:
    """Whether a K-shift (llama_memory_seq_add) survives on this K cache type. llama.cpp
    shifts a quantized K through a Hadamard rotation it only makes when the head size is a
    multiple of 64 and LLAMA_ATTN_ROT_DISABLE is not set; without one, build_rope_shift
    dereferences a NULL tensor (SIGSEGV)."""
    if type_k not in QUANT_BLOCK:
        return True
    disabled = re.match(r"\s*[+-]?\d+", os.environ.get("LLAMA_ATTN_ROT_DISABLE", ""))
    if disabled and int(disabled.group()) != 0:      # llama.cpp reads it with atoi
        return False
    sizes = _head_sizes(model)
    return sizes is not None and sizes[0] % 64 == 0
