"""The original C backend's test configs (original_backend.md section 7) parse and mean what
they say; their runtime configs parse as overrides of the load config."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import (Config, LoggingConfig, parse_config, parse_overrides,
                                    request_params)
from config_cases import ORIGINAL_CONFIGS, raises_naming


TEST_STOPPING_CONFIG = r"""{
  "model": {"n_gpu_layers": 49, "ctx_size": 4096, "n_predict": 256, "batch_size": 512,
            "threads": 8},
  "sampling": {"temp": 0.8, "top_p": 0.95, "top_k": 50, "penalty_last_n": 128},
  "stopping": {
    "stop_sequences": ["\n\n", "<|end|>", "</response>", "The end", ".\n"],
    "max_tokens": 200,
    "grammar_triggers": {"enabled": true,
                         "patterns": ["^\\s*$", "[.!?]\\s*$", "\\b(END|STOP|DONE)\\b"]},
    "timeout_config": {"enabled": true, "max_inference_time_ms": 30000, "adaptive_timeout": true,
                       "min_timeout_ms": 5000, "timeout_multiplier": 1.5},
    "semantic_stopping": {"enabled": true, "completion_confidence_threshold": 0.85,
                          "repetition_detection": true, "max_repetition_count": 3},
    "token_filters": {"forbidden_tokens": ["<unk>", "<mask>"], "required_tokens": [".", "!", "?"],
                      "pattern_based_triggers": ["^[A-Z][a-z]+\\.$"]}
  },
  "backend": {"max_sessions": 50, "max_concurrent": 2, "auto_cleanup_sessions": true}
}"""

# run_inference runtime configs of test 8 (b)-(e), (g); (a) passes none.
RUNTIME_CONFIGS = {
    "8b": '{"temperature":1.2,"top_p":0.95,"max_tokens":40}',
    "8c": '{"temperature":0.2,"top_p":0.7,"max_tokens":30}',
    "8d": '{"temperature":0.8,"max_tokens":100,"stop":[".","!"]}',
    "8e": '{"temperature":0.9,"top_p":0.85,"top_k":50,"repeat_penalty":1.15,'
          '"frequency_penalty":0.1,"presence_penalty":0.1,"max_tokens":35,"seed":42}',
    "8g": '{"temperature":5.0,"top_p":0.01,"max_tokens":10,"repeat_penalty":2.0}',
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_CONFIGS))
def test_original_test_configs_parse(name):
    cfg, _ = parse_config(ORIGINAL_CONFIGS[name])
    assert isinstance(cfg, Config)


def test_original_configs_mean_what_they_say():
    cfg, _ = parse_config(ORIGINAL_CONFIGS["2_legacy_flat"])
    b = cfg.backend
    assert (b.max_sessions, b.idle_timeout_ms, b.auto_cleanup, b.max_concurrent, b.queue_size) == \
        (25, 150000, False, 2, 10)
    assert (b.queue_warning_threshold, b.queue_reject_threshold) == (8, 10)   # follow queue_size
    cfg, _ = parse_config(ORIGINAL_CONFIGS["4_legacy_model"])
    assert (cfg.model.n_gpu_layers, cfg.model.n_ctx, cfg.model.n_batch, cfg.model.threads) == \
        (48, 1024, 256, 4)
    assert cfg.stopping.max_tokens == 256
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.repeat_penalty) == \
        (0.8, 0.9, 1.05)
    cfg, _ = parse_config(ORIGINAL_CONFIGS["5_enhanced_model"])
    assert cfg.stopping == cfg.stopping.model_copy(
        update={"stop": ("\n\n", "User:", "Assistant:"), "max_tokens": 512, "max_time_ms": 30000})
    assert cfg.memory.enable_token_cache_reuse is True and cfg.memory.max_cache_tokens == 10000
    cfg, _ = parse_config(ORIGINAL_CONFIGS["7_sampling"])
    assert cfg.sampling.mirostat == 1 and cfg.sampling.ignore_eos is True
    assert cfg.stopping.max_tokens == 80 and cfg.model.n_ctx == 1024
    cfg, _ = parse_config(ORIGINAL_CONFIGS["10_cleanup_off"])
    assert cfg.backend.auto_cleanup is False and cfg.backend.idle_timeout_ms == 50
    cfg, _ = parse_config(ORIGINAL_CONFIGS["11_concurrency"])
    assert (cfg.backend.max_concurrent, cfg.backend.queue_size) == (2, 5)
    assert (cfg.backend.queue_warning_threshold, cfg.backend.queue_reject_threshold) == (4, 5)
    cfg, _ = parse_config(ORIGINAL_CONFIGS["12_logging"])
    assert cfg.logging == LoggingConfig(level="debug", enable_debug=True, timestamps=True,
                                        colors=False, file="/tmp/wasi_nn_test.log")
    cfg, _ = parse_config(ORIGINAL_CONFIGS["13_none"])
    assert cfg.logging.level == "none"
    cfg, _ = parse_config(ORIGINAL_CONFIGS["25_task_queue"])
    assert cfg.backend.fair_scheduling_enabled is False
    assert cfg.backend.default_task_timeout_ms == 60000


def test_original_unicode_and_deep_configs_only_warn():
    _, warnings = parse_config(ORIGINAL_CONFIGS["26_unicode"])
    assert len(warnings) == 3 and all(w.startswith("model.") for w in warnings)
    cfg, warnings = parse_config(ORIGINAL_CONFIGS["26_deep"])
    assert cfg == Config() and warnings == ["level1: unknown key; ignored"]


def test_original_test_stopping_config():
    cfg, warnings = parse_config(TEST_STOPPING_CONFIG)
    assert cfg.stopping.stop == ("\n\n", "<|end|>", "</response>", "The end", ".\n")
    assert cfg.stopping.max_tokens == 200               # stopping.max_tokens over model.n_predict
    assert cfg.stopping.max_time_ms == 30000
    assert cfg.sampling.grammar_trigger_patterns[1] == "[.!?]\\s*$"
    assert (cfg.model.n_ctx, cfg.model.n_batch, cfg.sampling.temperature) == (4096, 512, 0.8)
    assert cfg.backend.auto_cleanup is True and cfg.backend.max_concurrent == 2
    text = "\n".join(warnings)
    for part in ("model.n_predict: 256 ignored: stopping.max_tokens (200)",
                 "stopping.semantic_stopping", "stopping.token_filters",
                 "stopping.timeout_config.adaptive_timeout", "grammar triggers only start"):
        assert part in text


@pytest.mark.parametrize("name", sorted(RUNTIME_CONFIGS))
def test_original_runtime_configs_parse(name):
    load, _ = parse_config(ORIGINAL_CONFIGS["8_load"])
    params, warnings = parse_overrides(RUNTIME_CONFIGS[name], base=request_params(load))
    assert warnings == []
    expected = json.loads(RUNTIME_CONFIGS[name])
    assert params.sampling.temperature == expected["temperature"]
    assert params.stopping.max_tokens == expected["max_tokens"]
    assert params.sampling.top_p == expected.get("top_p", 0.9)     # else the load config's


def test_original_runtime_config_8a_and_8f():
    base = request_params(parse_config(ORIGINAL_CONFIGS["8_load"])[0])
    assert parse_overrides(None, base=base) == (base, [])
    # (f) is malformed JSON: a clear InvalidEncoding; falling back is the caller's choice.
    raises_naming(errors.InvalidEncoding, '{"temperature":0.8,"invalid_json', "not valid JSON",
                  base=base, overrides=True)
