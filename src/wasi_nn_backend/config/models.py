"""The pydantic models: the one canonical form of every setting (see the package docstring)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .limits import GGML_MAX_N_THREADS, LLAMA_MAX_SEQ, MAX_N_BATCH, MAX_N_CTX, MIN_N_CTX


MAX_TIMEOUT_MS = 24 * 3600 * 1000   # a request's deadline: at most a day

class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class BackendSettings(_Frozen):
    max_sessions: int = Field(100, ge=1, le=1_000_000)
    idle_timeout_ms: int = Field(300_000, ge=1, le=7 * 24 * 3600 * 1000)
    auto_cleanup: bool = True
    max_concurrent: int = Field(10, ge=1, le=4096)
    queue_size: int = Field(500, ge=1, le=1_000_000)
    default_task_timeout_ms: int = Field(30_000, ge=0, le=24 * 3600 * 1000)  # 0 = no timeout
    priority_scheduling_enabled: bool = True
    fair_scheduling_enabled: bool = True
    auto_queue_cleanup: bool = True
    queue_warning_threshold: int = Field(400, ge=0, le=1_000_000)
    queue_reject_threshold: int = Field(500, ge=1, le=1_000_000)
    # A load of another model while one is loaded replaces it (the original's model switch,
    # without its downtime): same graph handle, new sessions on the new model.
    hot_swap: bool = False


class ModelSettings(_Frozen):
    # Ranges and cross-field rules: limits.py (which llama.cpp assert each one prevents).
    n_ctx: int = Field(2048, ge=MIN_N_CTX, le=MAX_N_CTX)  # context per session (tokens)
    n_batch: int = Field(512, ge=1, le=MAX_N_BATCH)       # most tokens in one decode
    n_ubatch: int | None = Field(None, ge=1, le=MAX_N_BATCH)  # None = n_batch
    n_seq_max: int = Field(8, ge=1, le=LLAMA_MAX_SEQ)     # KV sequence slots
    threads: int | None = Field(None, ge=1, le=GGML_MAX_N_THREADS)  # None = the CPU count (<= 512)
    threads_batch: int | None = Field(None, ge=1, le=GGML_MAX_N_THREADS)
    n_gpu_layers: int = Field(0, ge=-1, le=100_000)
    use_mmap: bool = True
    flash_attn: Literal["auto", "on", "off"] = "auto"
    # One KV stream per sequence: a session's numbers never depend on what other sessions hold
    # (unified KV makes attention run over every cell, so results shift with other sessions),
    # and attention skips other sessions' cells. True allows cheap cross-session seq_cp.
    kv_unified: bool = False
    cache_type_k: Literal["f32", "f16", "q8_0", "q4_0"] = "f16"
    cache_type_v: Literal["f32", "f16", "q8_0", "q4_0"] = "f16"
    chat_template: str | None = None                      # overrides the GGUF's template
    deterministic: bool = False   # logits never depend on what else runs (core/scheduler.py)
    # A step's text emitted while the next decode computes (auto: with GPU layers).
    async_output: Literal["auto", "on", "off"] = "auto"
    # Sampler chains run inside llama_decode's graph where they can (auto: with GPU layers).
    backend_sampling: Literal["auto", "on", "off"] = "auto"
    # Embedding graphs (WasmEdge's ``embedding``): compute returns a pooled vector, not text.
    embedding: bool = False
    pooling: Literal["mean", "cls", "last", "none"] | None = None  # None: the GGUF's, else mean
    # llama.cpp's embd_normalize: -1 none, 0 max-abs to int16 range, 1 taxicab, 2 euclidean
    # (L2, the default of llama.cpp and WasmEdge), p > 2 p-norm. true = 2, false = -1.
    normalize: int = Field(2, ge=-1, le=100)


class SamplingParams(_Frozen):
    temperature: float = Field(0.8, ge=0.0, le=100.0)     # <= 0 = greedy
    top_k: int = Field(40, ge=0, le=1 << 31)              # 0 = off
    top_p: float = Field(0.95, ge=0.0, le=1.0)            # 1 = off
    min_p: float = Field(0.05, ge=0.0, le=1.0)            # 0 = off
    typical_p: float = Field(1.0, ge=0.0, le=1.0)         # 1 = off
    top_n_sigma: float = Field(-1.0, ge=-1.0, le=100.0)   # < 0 = off
    repeat_penalty: float = Field(1.0, ge=0.0, le=100.0)  # 1 = off
    presence_penalty: float = Field(0.0, ge=-100.0, le=100.0)
    frequency_penalty: float = Field(0.0, ge=-100.0, le=100.0)
    penalty_last_n: int = Field(64, ge=-1, le=1 << 24)    # -1 = context size, 0 = off
    dry_multiplier: float = Field(0.0, ge=0.0, le=100.0)  # 0 = off
    dry_base: float = Field(1.75, ge=1.0, le=100.0)
    dry_allowed_length: int = Field(2, ge=0, le=1 << 16)
    dry_penalty_last_n: int = Field(-1, ge=-1, le=1 << 24)
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", "\"", "*")
    dynatemp_range: float = Field(0.0, ge=0.0, le=100.0)
    dynatemp_exponent: float = Field(1.0, ge=0.0, le=100.0)
    mirostat: Literal[0, 1, 2] = 0
    mirostat_tau: float = Field(5.0, ge=0.0, le=100.0)
    mirostat_eta: float = Field(0.1, ge=0.0, le=1.0)
    xtc_probability: float = Field(0.0, ge=0.0, le=1.0)
    xtc_threshold: float = Field(0.1, ge=0.0, le=1.0)
    min_keep: int = Field(1, ge=0, le=1 << 16)
    seed: int = Field(-1, ge=-1, le=0xFFFFFFFF)          # -1 = random
    n_probs: int = Field(0, ge=0, le=1024)
    ignore_eos: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()        # (token id, bias); -inf allowed
    grammar: str = ""                                      # GBNF; "" = none
    grammar_lazy: bool = False
    grammar_trigger_words: tuple[str, ...] = ()
    grammar_trigger_patterns: tuple[str, ...] = ()        # regexes (llama.cpp lazy patterns)
    grammar_trigger_tokens: tuple[int, ...] = ()
    json_schema: str = ""                                  # JSON text; converted to a grammar


class StoppingParams(_Frozen):
    max_tokens: int = Field(512, ge=-1, le=1 << 24)       # -1 = until context/EOG; 0 = none
    stop: tuple[str, ...] = ()                             # stop strings (never in the output)
    max_time_ms: int = Field(0, ge=0, le=24 * 3600 * 1000)  # 0 = no limit


class MemoryConfig(_Frozen):
    context_shifting: bool = True
    cache_strategy: Literal["lru", "fifo", "smart"] = "lru"
    max_cache_tokens: int = Field(100_000, ge=1, le=1 << 31)
    memory_pressure_threshold: float = Field(0.8, ge=0.1, le=1.0)
    n_keep_tokens: int = Field(128, ge=0, le=1 << 20)
    n_discard_tokens: int = Field(0, ge=0, le=1 << 20)    # 0 = half of what is not kept
    enable_partial_cache_deletion: bool = True
    enable_token_cache_reuse: bool = True
    cache_deletion_strategy: Literal["lru", "fifo", "smart"] = "lru"
    max_memory_mb: int = Field(8192, ge=0, le=1 << 24)    # host RAM for swapped KV; 0 = none
    # Weights + KV cache + compute buffers of every loaded model together; 0 = no limit.
    max_model_memory_mb: int = Field(0, ge=0, le=1 << 30)


class LoggingConfig(_Frozen):
    level: Literal["debug", "info", "warn", "error", "fatal", "none"] = "info"
    enable_debug: bool = False
    timestamps: bool = True
    colors: bool = False
    file: str | None = None


class PerformanceConfig(_Frozen):
    batch_processing: bool = True
    batch_size: int | None = Field(None, ge=1, le=MAX_N_BATCH)


class Config(_Frozen):
    backend: BackendSettings = BackendSettings()
    model: ModelSettings = ModelSettings()
    sampling: SamplingParams = SamplingParams()
    stopping: StoppingParams = StoppingParams()
    memory: MemoryConfig = MemoryConfig()
    logging: LoggingConfig = LoggingConfig()
    performance: PerformanceConfig = PerformanceConfig()


Priority = Literal["low", "normal", "high", "urgent"]


class RequestParams(_Frozen):
    sampling: SamplingParams = SamplingParams()
    stopping: StoppingParams = StoppingParams()
    priority: Priority = "normal"
    timeout_ms: int | None = Field(None, ge=0, le=MAX_TIMEOUT_MS)


# Section name -> its model: the canonical keys of each section, and what parse_config fills.
SECTION_MODELS: dict[str, type[BaseModel]] = {
    "backend": BackendSettings, "model": ModelSettings, "sampling": SamplingParams,
    "stopping": StoppingParams, "memory": MemoryConfig, "logging": LoggingConfig,
    "performance": PerformanceConfig,
}
