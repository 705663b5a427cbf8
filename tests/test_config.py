"""config.py: every accepted spelling maps onto the one canonical Config / RequestParams."""
from __future__ import annotations

import itertools
import json
import logging
import math

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import (Config, LoggingConfig, RequestParams, SamplingParams,
                                    dump_config, parse_config, parse_overrides, request_params)

# The "Configuration" example of USER_GUIDE.md, verbatim.
USER_GUIDE_EXAMPLE = r"""
{
  "backend": {
    "max_sessions": 100, "idle_timeout_ms": 300000, "auto_cleanup": true, "max_concurrent": 10,
    "queue_size": 500, "default_task_timeout_ms": 30000, "priority_scheduling_enabled": true,
    "fair_scheduling_enabled": true, "auto_queue_cleanup": true,
    "queue_warning_threshold": 400, "queue_reject_threshold": 500
  },
  "model": {"n_ctx": 4096, "n_gpu_layers": 32, "batch_size": 512, "threads": 8},
  "sampling": {
    "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "typical_p": 1.0,
    "repeat_penalty": 1.1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "penalty_last_n": 64,
    "seed": -1, "n_probs": 0, "min_keep": 1, "ignore_eos": false, "grammar": "",
    "grammar_lazy": false,
    "dry_multiplier": 0.0, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
    "dry_sequence_breakers": ["\n", ":", "\"", "*"],
    "dynatemp_range": 0.0, "dynatemp_exponent": 1.0,
    "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1
  },
  "stopping": {"max_tokens": 512, "ignore_eos": false, "stop": ["</s>", "[INST]", "[/INST]"]},
  "memory": {
    "context_shifting": true, "cache_strategy": "lru", "max_cache_tokens": 100000,
    "memory_pressure_threshold": 0.8, "n_keep_tokens": 128, "n_discard_tokens": 256,
    "enable_partial_cache_deletion": true, "enable_token_cache_reuse": true,
    "cache_deletion_strategy": "lru", "max_memory_mb": 8192
  },
  "logging": {"level": "info", "enable_debug": false, "timestamps": true, "colors": true,
              "file": "/var/log/wasi_nn_backend.log"},
  "performance": {"batch_processing": true, "batch_size": 512},
  "logit_bias": [[198, -1.0], [628, 0.5]]
}
"""

# Where a key of the example lands when it is not section.key itself.
MOVED = {"model.batch_size": "model.n_batch", "stopping.ignore_eos": "sampling.ignore_eos"}


def get(cfg, path: str):
    section, field = path.split(".")
    return getattr(getattr(cfg, section), field)


def raises_naming(exc_type, source, *parts, base=None, overrides=False):
    parse = (lambda: parse_overrides(source, base=base or RequestParams())) if overrides \
        else (lambda: parse_config(source, base=base))
    with pytest.raises(exc_type) as info:
        parse()
    for part in parts:
        assert part in info.value.message, (part, info.value.message)
    return info.value.message


# ---- the USER_GUIDE example ------------------------------------------------------------------

def test_user_guide_example_every_key_is_canonical():
    cfg, warnings = parse_config(USER_GUIDE_EXAMPLE)
    assert warnings == []
    doc = json.loads(USER_GUIDE_EXAMPLE)
    for section, body in doc.items():
        if section == "logit_bias":
            continue
        for key, value in body.items():
            path = MOVED.get(f"{section}.{key}", f"{section}.{key}")
            got = get(cfg, path)
            assert (list(got) if isinstance(got, tuple) else got) == value, path
    assert cfg.sampling.logit_bias == ((198, -1.0), (628, 0.5))


def test_user_guide_example_round_trips_through_dump():
    cfg, _ = parse_config(USER_GUIDE_EXAMPLE)
    dumped = dump_config(cfg)
    json.dumps(dumped, allow_nan=False)
    again, warnings = parse_config(dumped)
    assert again == cfg and warnings == []


# ---- the original's test configs (original_backend.md section 7) ------------------------------

ORIGINAL_CONFIGS = {
    "2_legacy_flat": '{"max_sessions":25,"idle_timeout_ms":150000,"auto_cleanup":false,'
                     '"max_concurrent":2,"queue_size":10}',
    "3_nested": '{"backend":{"max_sessions":100,"idle_timeout_ms":300000,"auto_cleanup":true,'
                '"max_concurrent":8,"queue_size":50},"memory_policy":{"context_shifting":true,'
                '"cache_strategy":"lru","max_cache_tokens":10000},"logging":{"level":"info",'
                '"enable_debug":false},"performance":{"batch_processing":true,"batch_size":512}}',
    "4_legacy_model": '{"n_gpu_layers":48,"ctx_size":1024,"n_predict":256,"batch_size":256,'
                      '"threads":4,"temp":0.8,"top_p":0.9,"repeat_penalty":1.05}',
    "5_enhanced_model": '{"model":{"n_gpu_layers":98,"ctx_size":2048,"n_predict":512,'
                        '"batch_size":512,"threads":8},"sampling":{"temp":0.7,"top_p":0.95,'
                        '"top_k":40,"min_p":0.05,"typical_p":1.0,"repeat_penalty":1.10,'
                        '"presence_penalty":0.0,"frequency_penalty":0.0,"penalty_last_n":64,'
                        '"mirostat":0,"mirostat_tau":5.0,"mirostat_eta":0.1,"seed":-1},'
                        '"stopping":{"stop":["\\n\\n","User:","Assistant:"],"max_tokens":512,'
                        '"max_time_ms":30000,"ignore_eos":false},"memory":{"context_shifting":true,'
                        '"cache_prompt":true,"max_cache_tokens":10000}}',
    "6_inference_init": '{"max_concurrent":4}',
    "6_inference_load": '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":100,'
                        '"sampling":{"temp":0.7}}',
    "7_sampling": '{"model":{"n_gpu_layers":98,"ctx_size":1024,"n_predict":80},"sampling":{'
                  '"temp":0.9,"top_p":0.8,"top_k":30,"min_p":0.1,"typical_p":0.95,'
                  '"repeat_penalty":1.15,"presence_penalty":0.1,"frequency_penalty":0.1,'
                  '"penalty_last_n":32,"mirostat":1,"mirostat_tau":4.0,"mirostat_eta":0.2,'
                  '"seed":12345},"stopping":{"stop":[".","!","?"],"max_tokens":80,'
                  '"ignore_eos":true}}',
    "8_load": '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":50,'
              '"sampling":{"temp":0.7,"top_p":0.9}}',
    "10_cleanup": '{"max_sessions":3,"idle_timeout_ms":100,"auto_cleanup_enabled":true,'
                  '"max_concurrent":2}',
    "10_cleanup_off": '{"max_sessions":2,"idle_timeout_ms":50,"auto_cleanup_enabled":false}',
    "10_load": '{"n_gpu_layers":0,"ctx_size":512,"n_predict":10}',
    "11_concurrency": '{"max_concurrent":2,"queue_size":5}',
    "11_load": '{"n_gpu_layers":98,"ctx_size":1024,"n_predict":50}',
    "12_logging": '{"model":{"n_gpu_layers":49,"ctx_size":2048,"n_predict":128,"batch_size":512,'
                  '"threads":8},"logging":{"level":"debug","enable_debug":true,"timestamps":true,'
                  '"colors":false,"file":"/tmp/wasi_nn_test.log"},"backend":{"max_sessions":50,'
                  '"max_concurrent":4,"queue_size":20}}',
    "13_none": '{"model":{"n_gpu_layers":10,"ctx_size":1024},"logging":{"level":"none"}}',
    "15_switch": '{"model":{"n_gpu_layers":49,"ctx_size":2048,"batch_size":512,"threads":4},'
                 '"backend":{"max_sessions":50,"max_concurrent":4,"queue_size":20},'
                 '"logging":{"level":"info","enable_debug":true}}',
    "22_phase42": '{"model":{"n_gpu_layers":49,"ctx_size":2048,"n_predict":128,"batch_size":512,'
                  '"threads":8},"sampling":{"temp":0.7,"top_p":0.95,"top_k":40},"backend":{'
                  '"max_sessions":100,"max_concurrent":2,"queue_size":5,'
                  '"default_task_timeout_ms":30000,"priority_scheduling_enabled":true,'
                  '"fair_scheduling_enabled":true,"queue_warning_threshold":4,'
                  '"queue_reject_threshold":5}}',
    "25_task_queue": '{"backend":{"max_concurrent":4,"queue_size":10,'
                     '"default_task_timeout_ms":60000,'
                     '"priority_scheduling_enabled":true,"fair_scheduling_enabled":false,'
                     '"queue_warning_threshold":8,"queue_reject_threshold":10},"model":{'
                     '"n_gpu_layers":98,"ctx_size":4096,"threads":16}}',
    "26_unicode": '{"model":{"path":"模型文件.gguf","name":"测试模型",'
                  '"description":"🤖 AI测试 🚀"}}',
    "26_deep": '{"level1":{"level2":{"level3":{"level4":{"level5":{"level6":{"level7":{"level8":'
               '{"level9":{"level10":{"value":"deep"}}}}}}}}}}}',
}

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


# ---- empty, encodings, document shapes -----------------------------------------------------------

@pytest.mark.parametrize("source", [None, "", "   \n\t  ", b"", b"  ", {}, "{}", "\ufeff{}",
                                    "{}\x00"])
def test_no_settings_means_defaults(source):
    assert parse_config(source) == (Config(), [])


@pytest.mark.parametrize("source, part", [
    ('{"temperature": 0.8, "x', "not valid JSON"),
    ("x" * (1 << 20), "not valid JSON"),
    (b"{\"temp\": \"\xff\xfe\"}", "not valid UTF-8"),
    ("[1, 2]", "must be a JSON object, got an array"),
    ('"text"', "must be a JSON object, got a string"),
    ("42", "must be a JSON object"),
    ('{"temperature": NaN}', "NaN is not valid JSON"),
    ("[" * 100_000, "JSON"),
])
def test_bad_documents_are_invalid_encoding(source, part):
    raises_naming(errors.InvalidEncoding, source, part)
    raises_naming(errors.InvalidEncoding, source, part, overrides=True)


def test_bytes_and_dicts_are_documents():
    assert parse_config(b'{"n_ctx": 1024}')[0].model.n_ctx == 1024
    assert parse_config(bytearray(b'{"n_ctx": 1024}\x00'))[0].model.n_ctx == 1024
    assert parse_config({"model": {"n_ctx": 1024}})[0].model.n_ctx == 1024


def test_a_source_of_another_type_is_invalid_argument():
    raises_naming(errors.InvalidArgument, 42, "got int")
    raises_naming(errors.InvalidArgument, {1: 2}, "keys must be strings")


def test_duplicate_keys_warn_and_the_last_wins():
    cfg, warnings = parse_config('{"n_ctx": 100, "n_ctx": 200}')
    assert cfg.model.n_ctx == 200 and "duplicate key" in warnings[0]


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


# ---- precedence -----------------------------------------------------------------------------

def _orders(doc: dict):
    for keys in itertools.permutations(doc):
        yield {k: doc[k] for k in keys}


@pytest.mark.parametrize("doc, path, expected", [
    ({"sampling": {"temperature": 0.1}, "temp": 0.2, "temperature": 0.3},
     "sampling.temperature", 0.1),
    ({"model": {"n_ctx": 100}, "ctx-size": 200, "n_ctx": 300}, "model.n_ctx", 100),
    ({"ctx-size": 200, "n_ctx": 300, "ctx_size": 400}, "model.n_ctx", 200),
    ({"top-p": 0.2, "top_p": 0.3}, "sampling.top_p", 0.2),
    ({"temp": 0.2, "temperature": 0.3}, "sampling.temperature", 0.3),
    ({"sampling": {"temp": 0.2, "temperature": 0.3}}, "sampling.temperature", 0.3),
    ({"n_ctx": 300, "ctx_size": 400}, "model.n_ctx", 300),
    ({"model": {"n_ctx": 300, "ctx_size": 400}}, "model.n_ctx", 300),
    ({"n_batch": 32, "batch_size": 64}, "model.n_batch", 32),
    ({"max_tokens": 5, "n_predict": 6}, "stopping.max_tokens", 5),
    ({"model": {"max_tokens": 5, "n_predict": 6}}, "stopping.max_tokens", 5),
    ({"model": {"n_predict": 6}, "stopping": {"max_tokens": 5}}, "stopping.max_tokens", 5),
    ({"stopping": {"ignore_eos": True}, "sampling": {"ignore_eos": False}}, "sampling.ignore_eos",
     False),
    ({"memory": {"n_keep_tokens": 10}, "memory_policy": {"n_keep_tokens": 20}},
     "memory.n_keep_tokens", 10),
    ({"performance": {"batch_size": 128}, "n_batch": 32}, "model.n_batch", 32),
    ({"performance": {"batch_size": 128}, "batch-size": 64}, "model.n_batch", 64),
    ({"dry-multiplier": 0.5, "dry-multipier": 0.9}, "sampling.dry_multiplier", 0.5),
    ({"n-parallel": 2, "n-sequences": 3}, "model.n_seq_max", 2),
    ({"runtime": {"temperature": 0.1}, "temperature": 0.2}, "sampling.temperature", 0.1),
    ({"logit_bias": [[1, 1.0]], "sampling": {"logit_bias": [[2, 2.0]]}}, "sampling.logit_bias",
     ((2, 2.0),)),
    ({"logging": {"level": "debug"}, "enable-log": False}, "logging.level", "debug"),
    ({"stop_sequences": ["a"], "stop": ["b"]}, "stopping.stop", ("b",)),
])
def test_precedence_is_order_independent(doc, path, expected):
    for ordered in _orders(doc):
        cfg, _ = parse_config(ordered)
        assert get(cfg, path) == expected, list(ordered)


def test_a_losing_spelling_with_another_value_warns():
    _, warnings = parse_config({"temp": 0.2, "temperature": 0.3})
    assert warnings == ["temp: 0.2 ignored: temperature (0.3) takes precedence"]
    assert parse_config({"temp": 0.3, "temperature": 0.3})[1] == []


def test_overrides_use_the_same_precedence():
    base = RequestParams()
    for ordered in _orders({"temp": 0.2, "temperature": 0.3, "sampling": {"temperature": 0.4}}):
        assert parse_overrides(ordered, base=base)[0].sampling.temperature == 0.4
    for ordered in _orders({"n_predict": 5, "max_tokens": 6, "n-predict": 7}):
        assert parse_overrides(ordered, base=base)[0].stopping.max_tokens == 7


# ---- unknown keys --------------------------------------------------------------------------

def test_unknown_keys_warn_with_their_path_and_are_logged(caplog):
    doc = {"temprature": 1, "sampling": {"top_q": 1, "temperature": 0.5}, "bogus": {"x": 1},
           "stopping": {"grammar_triggers": {"enabled": True, "odd": 1}}}
    with caplog.at_level(logging.WARNING, logger="wasi_nn_backend.config"):
        cfg, warnings = parse_config(doc)
    assert cfg.sampling.temperature == 0.5
    assert any(w.startswith("temprature: unknown key") and "did you mean 'temperature'" in w
               for w in warnings)
    assert any(w.startswith("sampling.top_q: unknown key") for w in warnings)
    assert any(w.startswith("bogus: unknown key") for w in warnings)
    assert any(w.startswith("stopping.grammar_triggers.odd: unknown key") for w in warnings)
    logged = [r.getMessage() for r in caplog.records if r.name == "wasi_nn_backend.config"]
    assert set(warnings) <= set(logged)


def test_keys_with_no_effect_warn():
    _, warnings = parse_config({"use_mlock": True, "numa": "distribute",
                                "model": {"use_mlock": True, "path": "x.gguf"},
                                "performance": {"batch_timeout_ms": 10}})
    assert len(warnings) == 5 and all("ignored" in w for w in warnings)


def test_per_request_keys_in_a_config_and_load_keys_in_overrides_warn():
    cfg, warnings = parse_config({"priority": "high", "timeout_ms": 5})
    assert cfg == Config() and len(warnings) == 2 and "per-request" in warnings[0]
    params, warnings = parse_overrides({"ctx-size": 0, "model": {"n_ctx": "big"},
                                        "backend": {"max_sessions": 1}, "memory": 5},
                                       base=RequestParams())
    assert params == RequestParams() and len(warnings) == 4
    assert all("load-time setting" in w for w in warnings)


# ---- wrong types, ranges -----------------------------------------------------------------------

@pytest.mark.parametrize("doc, parts", [
    ({"n_ctx": "big"}, ["n_ctx", '"big"', "a string", "an integer in [16, 1048576]"]),
    ({"model": {"n_ctx": 8}}, ["model.n_ctx", "out of range", "8", "[16, 1048576]"]),
    ({"model": {"n_ctx": 4096.0}}, ["model.n_ctx", "4096.0", "an integer"]),
    ({"model": {"n_ctx": True}}, ["model.n_ctx", "true", "a boolean"]),
    ({"auto_cleanup": 1}, ["auto_cleanup", "true or false"]),
    ({"sampling": {"top_p": 1.5}}, ["sampling.top_p", "1.5", "out of range", "[0.0, 1.0]"]),
    ({"sampling": {"temperature": True}}, ["sampling.temperature", "a number"]),
    ({"sampling": {"mirostat": 3}}, ["sampling.mirostat", "one of 0, 1, 2"]),
    ({"sampling": {"mirostat": True}}, ["sampling.mirostat", "one of 0, 1, 2"]),
    ({"sampling": {"seed": -2}}, ["sampling.seed", "-2", "[-1, 4294967295]"]),
    ({"stop": 5}, ["stop", "5", "a list of strings"]),
    ({"stopping": {"stop": ["a", 3]}}, ["stopping.stop[1]", "3", "a string"]),
    ({"stopping": {"stop": ["a", ""]}}, ["stopping.stop[1]", "a non-empty string"]),
    ({"sampling": 5}, ["sampling", "an object"]),
    ({"runtime": []}, ["runtime", "an object"]),
    ({"stopping": {"grammar_triggers": ["x"]}}, ["stopping.grammar_triggers", "an object"]),
    ({"logging": {"level": "verbose"}}, ["logging.level", '"verbose"', '"debug"', '"none"']),
    ({"flash-attn": "maybe"}, ["flash-attn", '"auto", "on", "off"']),
    ({"enable-log": "yes"}, ["enable-log", "true or false"]),
    ({"json-schema": "{oops"}, ["json-schema", "JSON schema"]),
    ({"json-schema": 3}, ["json-schema", "JSON schema"]),
    ({"logit_bias": [[1, True]]}, ["logit_bias[0][1]", "false (= never)"]),
    ({"logit_bias": [[-1, 1.0]]}, ["logit_bias[0][0]", "token id"]),
    ({"logit_bias": [[1]]}, ["logit_bias[0]", "pair"]),
    ({"logit_bias": 3}, ["logit_bias", "token_id"]),
    ({"model": {"n_ubatch": None, "threads": "4"}}, ["model.threads", "or null"]),
])
def test_bad_values_name_path_value_and_range(doc, parts):
    raises_naming(errors.InvalidArgument, doc, *parts)


def test_ints_are_fine_for_floats_and_null_resets_optionals():
    cfg, _ = parse_config({"sampling": {"temperature": 1, "top_p": 1}, "model": {"threads": None}})
    assert cfg.sampling.temperature == 1.0 and isinstance(cfg.sampling.temperature, float)
    assert cfg.model.threads is None


def test_every_bad_value_is_reported_at_once_even_a_losing_one():
    message = raises_naming(errors.InvalidArgument,
                            {"temp": "hot", "temperature": 0.5, "top_k": 1.5, "max_tokens": "x"},
                            "temp", "top_k", "max_tokens")
    assert message.count(";") >= 2


# ---- cross-field rules ---------------------------------------------------------------------

def test_queue_thresholds_follow_queue_size_and_are_checked():
    cfg, _ = parse_config({"queue_size": 100})
    assert (cfg.backend.queue_warning_threshold, cfg.backend.queue_reject_threshold) == (80, 100)
    cfg, _ = parse_config({"queue_size": 100, "queue_reject_threshold": 50})
    assert (cfg.backend.queue_warning_threshold, cfg.backend.queue_reject_threshold) == (50, 50)
    cfg2, _ = parse_config({"queue_size": 1000}, base=cfg)
    assert cfg2.backend.queue_reject_threshold == 1000
    raises_naming(errors.InvalidArgument,
                  {"backend": {"queue_size": 10, "queue_reject_threshold": 20}},
                  "backend.queue_reject_threshold (20)", "backend.queue_size (10)")
    raises_naming(errors.InvalidArgument, {"queue_warning_threshold": 600},
                  "backend.queue_warning_threshold (600, given as queue_warning_threshold)",
                  "backend.queue_reject_threshold (500)")


def test_ubatch_must_fit_the_batch():
    raises_naming(errors.InvalidArgument, {"ubatch-size": 1024, "batch-size": 256},
                  "model.n_ubatch (1024, given as ubatch-size)",
                  "model.n_batch (256, given as batch-size)")
    cfg, _ = parse_config({"model": {"n_batch": 256, "n_ubatch": 128}})
    raises_naming(errors.InvalidArgument, {"n_batch": 64}, "model.n_ubatch (128)", base=cfg)


def test_grammar_and_json_schema_are_exclusive():
    raises_naming(errors.InvalidArgument,
                  {"grammar": "root ::= \"a\"", "json-schema": {"type": "string"}},
                  "grammar", "json-schema", "exclusive")
    cfg, _ = parse_config({"grammar": "root ::= \"a\""})
    cfg2, _ = parse_config({"json_schema": {"type": "string"}}, base=cfg)
    assert cfg2.sampling.grammar == "" and cfg2.sampling.json_schema == '{"type":"string"}'
    params, _ = parse_overrides({"grammar": "root ::= \"b\""}, base=request_params(cfg2))
    assert params.sampling.json_schema == "" and params.sampling.grammar == "root ::= \"b\""


# ---- base merging, nothing half-applied -------------------------------------------------------

def test_settings_not_mentioned_keep_the_base():
    backend_cfg, _ = parse_config({"backend": {"max_sessions": 7}, "logging": {"level": "error"}})
    model_cfg, _ = parse_config({"ctx_size": 1024, "temp": 0.1}, base=backend_cfg)
    assert model_cfg.backend.max_sessions == 7 and model_cfg.logging.level == "error"
    assert model_cfg.model.n_ctx == 1024 and model_cfg.sampling.temperature == 0.1
    assert backend_cfg.model.n_ctx == 2048


def test_nothing_is_half_applied():
    base, _ = parse_config({"n_ctx": 1024})
    snapshot = base.model_dump()
    for doc in ({"n_ctx": 4096, "temperature": 0.1, "top_p": 7},
                {"n_ctx": 4096, "queue_warning_threshold": 999},
                {"n_ctx": 4096, "sampling": []}):
        with pytest.raises(errors.InvalidArgument):
            parse_config(doc, base=base)
        assert base.model_dump() == snapshot


# ---- overrides -------------------------------------------------------------------------------

def test_overrides_return_new_params_and_never_touch_the_base():
    cfg, _ = parse_config(ORIGINAL_CONFIGS["8_load"])
    base = request_params(cfg)
    snapshot = base.model_dump()
    first, _ = parse_overrides('{"temperature": 1.2, "stop": ["."], "max_tokens": 40}', base=base)
    assert first is not base and first.sampling.temperature == 1.2
    assert base.model_dump() == snapshot
    second, _ = parse_overrides(None, base=base)
    assert second == base and second.stopping.stop == () and second.sampling.temperature == 0.7
    with pytest.raises(Exception):
        base.sampling.temperature = 2.0          # frozen: nobody can change it in place


def test_overrides_accept_every_form():
    base = RequestParams()
    params, warnings = parse_overrides(
        {"sampling": {"top_k": 5}, "stopping": {"stop": ["x"]}, "runtime": {"temp": 0.25},
         "repeat-penalty": 1.2, "priority": "URGENT", "timeout_ms": 1500,
         "logit_bias": {"7": False}}, base=base)
    assert warnings == []
    assert (params.sampling.top_k, params.sampling.temperature, params.sampling.repeat_penalty) == \
        (5, 0.25, 1.2)
    assert params.stopping.stop == ("x",) and params.priority == "urgent"
    assert params.timeout_ms == 1500 and params.sampling.logit_bias == ((7, -math.inf),)
    kwargs, _ = parse_overrides({"temperature": 0, "stop": ("a", "b"), "max_tokens": 3}, base=base)
    assert kwargs.sampling.temperature == 0.0 and kwargs.stopping.stop == ("a", "b")
    assert parse_overrides({"timeout_ms": None}, base=params)[0].timeout_ms is None


def test_override_errors_name_the_path():
    raises_naming(errors.InvalidArgument, {"priority": "soon"}, "priority", '"soon"', '"urgent"',
                  overrides=True)
    raises_naming(errors.InvalidArgument, {"runtime": {"top_p": -1}}, "runtime.top_p",
                  "out of range", overrides=True)
    raises_naming(errors.InvalidArgument, {"timeout_ms": -5}, "timeout_ms", "-5", overrides=True)


def test_request_params_come_from_the_config():
    cfg, _ = parse_config(ORIGINAL_CONFIGS["7_sampling"])
    params = request_params(cfg)
    assert params.sampling == cfg.sampling and params.stopping == cfg.stopping
    assert params.priority == "normal" and params.timeout_ms is None


# ---- dump -----------------------------------------------------------------------------------

def test_dump_is_json_and_reads_back():
    cfg, _ = parse_config({"logit_bias": {"5": False, "6": -2}, "stop": ["a"], "queue_size": 20,
                           "model": {"n_batch": 256, "n_ubatch": 64},
                           "performance": {"batch_size": 1024},
                           "json-schema": {"type": "object"}})
    dumped = dump_config(cfg)
    assert dumped["sampling"]["logit_bias"] == [[5, False], [6, -2.0]]
    json.dumps(dumped, allow_nan=False)
    assert parse_config(dumped) == (cfg, [])
    params = request_params(cfg)
    assert parse_overrides(dump_config(params), base=RequestParams()) == (params, [])


def test_sampling_defaults_are_unchanged_contract():
    # The parser must never change what a default means (other modules rely on them).
    assert SamplingParams().top_k == 40 and Config().model.n_ubatch is None


# -- embeddings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, expected", [
    ({"model": {"embedding": True, "pooling": "LAST", "normalize": False}}, (True, "last", -1)),
    ({"embeddings": True, "pooling_type": 0, "embd_normalize": 1}, (True, "none", 1)),
    ({"model": {"normalize": True, "pooling": None}}, (False, None, 2)),
    ({"pooling-type": 1, "model": {"pooling": "cls"}}, (False, "cls", 2)),
])
def test_embedding_settings(doc, expected):
    cfg, _ = parse_config(doc)
    assert (cfg.model.embedding, cfg.model.pooling, cfg.model.normalize) == expected


@pytest.mark.parametrize("doc, words", [
    ({"pooling-type": 4}, "rank pooling"),
    ({"model": {"pooling": "max"}}, '"mean", "cls", "last", "none"'),
    ({"pooling-type": 9}, "out of range"),
    ({"embd-normalize": 1.5}, "an integer in [-1, 100]"),
    ({"embedding": 1}, "true or false"),
])
def test_bad_embedding_settings_are_named(doc, words):
    with pytest.raises(errors.InvalidArgument) as caught:
        parse_config(doc)
    assert words in caught.value.message


def test_embedding_is_a_load_time_setting():
    _, warnings = parse_overrides({"embedding": True}, base=request_params(Config()))
    assert warnings == ["embedding: a load-time setting; it has no effect on a single request; "
                        "ignored"]
