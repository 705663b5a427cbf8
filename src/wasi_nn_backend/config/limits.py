"""The limits of llama.cpp's load settings, and the table of checks that keep a setting from
reaching a llama.cpp GGML_ASSERT / GGML_ABORT (each kills the process: no exception, no code).

llama_init_from_model and llama_model_load_from_file catch C++ exceptions (a ``throw`` is a
NULL handle, which llm/ turns into an error code); asserts and aborts are not caught. So every
setting passed to llama.cpp is either held to a range here, checked against the others, or
shown safe at its boundaries by tests/hostile/test_params.py (one child process loads every
boundary value alone and pairwise and decodes several sequences at once; a combination that
killed it is named). Sources: llama-cpp-python 0.3.36's vendored llama.cpp.

config must not import llm, so the numbers llama.cpp defines are copied here; the tests check
LLAMA_MAX_SEQ against llama_max_parallel_sequences().
"""
from __future__ import annotations

from dataclasses import dataclass

LLAMA_MAX_SEQ = 256             # src/llama-cparams.h: KV cells keep std::bitset<LLAMA_MAX_SEQ>
GGML_MAX_N_THREADS = 512        # ggml/include/ggml.h: CPU masks and thread pools are this big
KV_PAD = 256                    # llama_context pads n_ctx (and n_ctx per stream) to this
QUANT_BLOCK = {"q8_0": 32, "q4_0": 32}  # elements per block of the quantized cache types
MIN_N_CTX = 16
MAX_N_CTX = 1 << 20             # per session; times LLAMA_MAX_SEQ stays far below 2**32
MAX_N_BATCH = 1 << 16
MAX_CONTEXT_CELLS = MAX_N_CTX * LLAMA_MAX_SEQ   # what llm.Context accepts as its total n_ctx


@dataclass(frozen=True)
class Check:
    rule: str           # what is refused (or adjusted)
    prevents: str       # the llama.cpp/ggml failure, file:function and the assert text
    enforced_in: str    # where


CHECKS: tuple[Check, ...] = (
    Check("generating graph: model.n_batch >= model.n_seq_max (llm: n_seq_max <= "
          "min(n_ctx, n_batch), llama.cpp's n_outputs_max for causal models)",
          "src/llama-context.cpp llama_context::output_reserve: GGML_ASSERT(n_outputs_max <= "
          "cparams.n_outputs_max), at load (the constructor reserves one output row per "
          "sequence) and at every decode",
          "config/rules.py cross_checks; llm/context_params.py"),
    Check("embedding graph: its context gets min(n_seq_max, n_ubatch) sequences (a decode "
          "holds at most n_ubatch texts of one token or more)",
          "src/llama-context.cpp llama_context::output_reserve: GGML_ASSERT(n_outputs_max <= "
          "cparams.n_outputs_max)",
          "engine/contexts.py embedding_context"),
    Check("non-causal (bidirectional) model: a decode takes at most n_ubatch tokens (the "
          "context's n_batch is min(n_batch, n_ubatch)), and n_ubatch >= n_seq_max for "
          "generation; causality is read from the made context (llama_get_causal_attn)",
          "src/llama-context.cpp llama_context::decode: GGML_ASSERT((cparams.causal_attn || "
          "cparams.n_ubatch >= n_tokens_all) && \"non-causal attention requires n_ubatch >= "
          "n_tokens\")",
          "llm/context.py Context.__init__ and Context.decode; engine/embedder.py limit"),
    Check("a decode's batch has at most n_batch tokens and sequence ids in [0, n_seq_max)",
          "src/llama-context.cpp llama_context::decode: GGML_ASSERT(n_tokens_all <= "
          "cparams.n_batch); llama-batch.cpp / llama-kv-cells.h index bitsets by seq id",
          "llm/context.py Context.decode, Context._seq"),
    Check(f"model.n_seq_max in [1, {LLAMA_MAX_SEQ}]",
          "src/llama-context.cpp llama_context constructor throws (safe) above LLAMA_MAX_SEQ; "
          "seq ids beyond it index std::bitset<LLAMA_MAX_SEQ> in src/llama-kv-cells.h "
          "(assert(seq_id < LLAMA_MAX_SEQ), compiled out in release builds)",
          "config/models.py; llm/context_params.py"),
    Check(f"model.threads, model.threads_batch in [1, {GGML_MAX_N_THREADS}]",
          "ggml/src/ggml-cpu/ggml-cpu.c: ggml's CPU masks hold GGML_MAX_N_THREADS entries; "
          "every decode starts that many threads, and a failed thread creation ends the "
          "process (libgomp's fatal error, or GGML_ASSERT(rc == 0) in "
          "ggml_threadpool_new_impl without OpenMP); the range also keeps the int32 fields "
          "from wrapping",
          "config/models.py; llm/context_params.py"),
    Check("quantized cache_type_k / cache_type_v: every layer's head size is a multiple of "
          "the type's block size (32)",
          "src/llama-context.cpp llama_init_from_model returns NULL with flash attention "
          "('K cache type ... does not divide n_embd_head_k'); without it llama.cpp accepts a "
          "quantized K and attends over misaligned blocks: wrong logits, no error (measured "
          "on head size 16: logits off by 8 of 12)",
          "llm/context_params.py check_cache_types (from Context.__init__)"),
    Check("quantized cache_type_v needs flash_attn auto or on",
          "src/llama-context.cpp llama_init_from_model returns NULL ('quantized V cache "
          "requires flash_attn'): refused first, with the keys named",
          "llm/context_params.py"),
    Check("model.n_ubatch <= model.n_batch",
          "nothing fatal: the llama_context constructor clamps n_ubatch to n_batch; refused "
          "so that the setting means what it says",
          "config/rules.py cross_checks; llm/context_params.py"),
    Check(f"model.n_ctx in [{MIN_N_CTX}, {MAX_N_CTX}] per session, n_batch and n_ubatch in "
          f"[1, {MAX_N_BATCH}]; llm.Context's total n_ctx <= {MAX_CONTEXT_CELLS}",
          "llama_context_params fields are uint32 (ctypes truncates silently) and "
          "src/llama-context.cpp pads n_ctx with GGML_PAD(n_ctx, 256): neither can wrap",
          "config/models.py; llm/context_params.py"),
    Check("KV cache + compute buffers, with llama.cpp's padding of every stream to 256 cells, "
          "within physical RAM (or memory.max_model_memory_mb)",
          "src/llama-kv-cache.cpp llama_kv_cache: the buffer is cleared (every page written) "
          "at load: an oversized one gets the process killed by the kernel, not an error",
          "engine/footprint.py estimate_footprint; api/budget.py MemoryBudget.reserve"),
    Check("quantized cache_type_k: no K-shift (context shifting) unless the head size is a "
          "multiple of 64 and LLAMA_ATTN_ROT_DISABLE is unset (Context.can_shift() is false: "
          "the scheduler does not shift, a full context ends with context_full)",
          "src/llama-kv-cache.cpp llama_kv_cache::build_rope_shift: a quantized K is shifted "
          "through llama_mul_mat_hadamard(ctx, tmp, rot) with rot NULL when no rotation "
          "matrix was made: SIGSEGV at the next decode (measured: head sizes 32 and 64 with "
          "LLAMA_ATTN_ROT_DISABLE=1)",
          "llm/context_params.py quantized_k_can_shift; llm/context.py Context.can_shift"),
    Check("kv_unified false: no partial seq_cp between sequences; no K-shift on memory that "
          "cannot shift",
          "src/llama-kv-cache.cpp llama_kv_cache::seq_cp: GGML_ASSERT(is_full && \"seq_cp() is "
          "only supported for full KV buffers\"); llama_kv_cache::update: GGML_ABORT(\"The "
          "current KV cache / model configuration does not support K-shift\")",
          "llm/context.py Context.seq_cp, Context.seq_add"),
    Check("model.n_gpu_layers in [-1, 100000] (int32); use_mmap only where "
          "llama_supports_mmap()",
          "none in src/llama-model.cpp llama_model::n_gpu_layers: -1 is every layer, more "
          "than n_layer + 1 is clamped, a CPU-only build offloads nothing (shown safe by "
          "tests/hostile/test_params.py)",
          "config/models.py; llm/model.py Model.load"),
    Check("rope/yarn: no setting is passed (WasmEdge's rope-*/yarn-* keys only warn), so "
          "llama.cpp reads the GGUF's values",
          "nothing to prevent in llama.cpp's rope/yarn code from a setting (a hostile GGUF's "
          "own values are the model header's checks)",
          "config/keys.py (warnings); llm/context_params.py keeps llama_context_default_params"),
)
