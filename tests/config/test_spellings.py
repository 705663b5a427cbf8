"""Every accepted spelling of a setting maps onto the one canonical Config: legacy flat keys and
aliases, WasmEdge's kebab-case keys (those without meaning here warn), reverse-prompt."""
from __future__ import annotations

import math

import pytest

from wasi_nn_backend.config import Config, parse_config
from config_cases import get


# ---- legacy flat keys and aliases ---------------------------------------------------------------

@pytest.mark.parametrize("doc, path, value", [
    ({"max_sessions": 7}, "backend.max_sessions", 7),
    ({"idle_timeout_ms": 100}, "backend.idle_timeout_ms", 100),
    ({"auto_cleanup": False}, "backend.auto_cleanup", False),
    ({"auto_cleanup_enabled": False}, "backend.auto_cleanup", False),
    ({"auto_cleanup_sessions": False}, "backend.auto_cleanup", False),
    ({"max_concurrent": 3}, "backend.max_concurrent", 3),
    ({"default_task_timeout_ms": 0}, "backend.default_task_timeout_ms", 0),
    ({"n_ctx": 1000}, "model.n_ctx", 1000),
    ({"ctx_size": 1000}, "model.n_ctx", 1000),
    ({"n_batch": 64}, "model.n_batch", 64),
    ({"batch_size": 64}, "model.n_batch", 64),
    ({"n_gpu_layers": -1}, "model.n_gpu_layers", -1),
    ({"threads": 3}, "model.threads", 3),
    ({"n_threads": 3}, "model.threads", 3),
    ({"use_mmap": False}, "model.use_mmap", False),
    ({"n_predict": 9}, "stopping.max_tokens", 9),
    ({"max_tokens": 9}, "stopping.max_tokens", 9),
    ({"model": {"n_predict": 9}}, "stopping.max_tokens", 9),
    ({"model": {"max_tokens": 9}}, "stopping.max_tokens", 9),
    ({"model": {"ctx_size": 1000}}, "model.n_ctx", 1000),
    ({"model": {"batch_size": 64}}, "model.n_batch", 64),
    ({"temp": 0.3}, "sampling.temperature", 0.3),
    ({"temperature": 0.3}, "sampling.temperature", 0.3),
    ({"sampling": {"temp": 0.3}}, "sampling.temperature", 0.3),
    ({"top_p": 0.5}, "sampling.top_p", 0.5),
    ({"repeat_penalty": 1.2}, "sampling.repeat_penalty", 1.2),
    ({"repeat_last_n": 16}, "sampling.penalty_last_n", 16),
    ({"sampling": {"repeat_last_n": 16}}, "sampling.penalty_last_n", 16),
    ({"logprobs": 5}, "sampling.n_probs", 5),
    ({"top_k": -1}, "sampling.top_k", 0),
    ({"stop": "###"}, "stopping.stop", ("###",)),
    ({"stop_sequences": ["a", "b"]}, "stopping.stop", ("a", "b")),
    ({"stopping": {"stop_sequences": ["a"]}}, "stopping.stop", ("a",)),
    ({"stopping": {"ignore_eos": True}}, "sampling.ignore_eos", True),
    ({"stopping": {"n_predict": 9}}, "stopping.max_tokens", 9),
    ({"max_time_ms": 500}, "stopping.max_time_ms", 500),
    ({"max_inference_time_ms": 500}, "stopping.max_time_ms", 500),
    ({"stopping": {"max_inference_time_ms": 500}}, "stopping.max_time_ms", 500),
    ({"timeout_config": {"max_inference_time_ms": 500}}, "stopping.max_time_ms", 500),
    ({"stopping": {"timeout_config": {"enabled": False, "max_inference_time_ms": 500}}},
     "stopping.max_time_ms", 0),
    ({"memory_policy": {"n_keep_tokens": 64}}, "memory.n_keep_tokens", 64),
    ({"memory": {"cache_prompt": False}}, "memory.enable_token_cache_reuse", False),
    ({"cache_prompt": False}, "memory.enable_token_cache_reuse", False),
    ({"enable_debug": True}, "logging.enable_debug", True),
    ({"logging": {"level": "WARNING"}}, "logging.level", "warn"),
    ({"performance": {"batch_size": 128}}, "model.n_batch", 128),
    ({"performance": {"batch_size": 128}}, "performance.batch_size", 128),
    ({"logit_bias": {"15": False, "16": 2}}, "sampling.logit_bias", ((15, -math.inf), (16, 2.0))),
    ({"sampling": {"json_schema": {"type": "object"}}}, "sampling.json_schema",
     '{"type":"object"}'),
])
def test_legacy_flat_keys_and_aliases(doc, path, value):
    cfg, warnings = parse_config(doc)
    assert get(cfg, path) == value
    assert warnings == []


# ---- WasmEdge kebab-case keys ------------------------------------------------------------------

@pytest.mark.parametrize("key, value, path, expected", [
    ("ctx-size", 1024, "model.n_ctx", 1024),
    ("batch-size", 256, "model.n_batch", 256),
    ("ubatch-size", 128, "model.n_ubatch", 128),
    ("threads", 4, "model.threads", 4),
    ("threads-batch", 4, "model.threads_batch", 4),
    ("n-gpu-layers", 99, "model.n_gpu_layers", 99),
    ("n-parallel", 4, "model.n_seq_max", 4),
    ("n-sequences", 4, "model.n_seq_max", 4),
    ("use-mmap", False, "model.use_mmap", False),
    ("flash-attn", "on", "model.flash_attn", "on"),
    ("flash-attn", False, "model.flash_attn", "off"),
    ("cache-type-k", "q8_0", "model.cache_type_k", "q8_0"),
    ("cache-type-v", "Q4_0", "model.cache_type_v", "q4_0"),
    ("chat-template", "chatml", "model.chat_template", "chatml"),
    ("n-predict", 64, "stopping.max_tokens", 64),
    ("n-predict", -5, "stopping.max_tokens", -1),
    ("reverse-prompt", "User:", "stopping.stop", ("User:",)),
    ("temp", 0.1, "sampling.temperature", 0.1),
    ("top-p", 0.5, "sampling.top_p", 0.5),
    ("top-k", 5, "sampling.top_k", 5),
    ("min-p", 0.2, "sampling.min_p", 0.2),
    ("typ-p", 0.9, "sampling.typical_p", 0.9),
    ("xtc-probability", 0.5, "sampling.xtc_probability", 0.5),
    ("xtc-threshold", 0.2, "sampling.xtc_threshold", 0.2),
    ("repeat-penalty", 1.3, "sampling.repeat_penalty", 1.3),
    ("presence-penalty", 0.5, "sampling.presence_penalty", 0.5),
    ("frequency-penalty", -0.5, "sampling.frequency_penalty", -0.5),
    ("last-n-penalty", 32, "sampling.penalty_last_n", 32),
    ("dry-multipier", 0.8, "sampling.dry_multiplier", 0.8),
    ("dry-multiplier", 0.8, "sampling.dry_multiplier", 0.8),
    ("dry-base", 2, "sampling.dry_base", 2.0),
    ("dry-allowed-length", 3, "sampling.dry_allowed_length", 3),
    ("dry-last-n-penalty", 64, "sampling.dry_penalty_last_n", 64),
    ("mirostat", 2, "sampling.mirostat", 2),
    ("mirostat-eta", 0.2, "sampling.mirostat_eta", 0.2),
    ("mirostat-tau", 4, "sampling.mirostat_tau", 4.0),
    ("dynatemp-range", 0.5, "sampling.dynatemp_range", 0.5),
    ("dynatemp-exponent", 2, "sampling.dynatemp_exponent", 2.0),
    ("min-keep", 2, "sampling.min_keep", 2),
    ("n-probs", 3, "sampling.n_probs", 3),
    ("seed", 7, "sampling.seed", 7),
    ("ignore-eos", True, "sampling.ignore_eos", True),
    ("grammar", "root ::= \"a\"", "sampling.grammar", "root ::= \"a\""),
    ("json-schema", '{"type": "string"}', "sampling.json_schema", '{"type": "string"}'),
    ("json-schema", {"type": "string"}, "sampling.json_schema", '{"type":"string"}'),
    ("n-keep", 32, "memory.n_keep_tokens", 32),
    ("ctx-shift", False, "memory.context_shifting", False),
    ("enable-log", True, "logging.level", "info"),
    ("enable-log", False, "logging.level", "error"),
    ("enable-debug-log", True, "logging.enable_debug", True),
    ("embedding", True, "model.embedding", True),
    ("pooling-type", 2, "model.pooling", "cls"),
    ("pooling-type", -1, "model.pooling", None),
    ("embd-normalize", -1, "model.normalize", -1),
])
def test_kebab_keys(key, value, path, expected):
    cfg, warnings = parse_config({key: value})
    assert get(cfg, path) == expected and warnings == []


@pytest.mark.parametrize("key", ["mmproj", "tts", "port", "reranking", "yarn-orig-ctx",
                                 "n-draft-speculative", "slot-save-path", "main-gpu"])
def test_wasmedge_keys_without_meaning_warn(key):
    cfg, warnings = parse_config({key: 1})
    assert cfg == Config()
    assert warnings == [f"{key}: WasmEdge key with no effect in this backend; ignored"]


def test_reverse_prompt_is_appended_to_stop_once():
    cfg, _ = parse_config({"stop": ["a"], "reverse-prompt": "b"})
    assert cfg.stopping.stop == ("a", "b")
    cfg2, _ = parse_config({"reverse-prompt": "b"}, base=cfg)
    assert cfg2.stopping.stop == ("a", "b")
    assert parse_config({"reverse-prompt": ""})[0].stopping.stop == ()
