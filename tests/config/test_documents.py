"""What a configuration document may be: the USER_GUIDE example (every key canonical, and it
round-trips through dump_config), empty sources, encodings and document shapes, and dump_config
reading back."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import (Config, RequestParams, SamplingParams, dump_config,
                                    parse_config, parse_overrides, request_params)
from config_cases import get, raises_naming


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
