"""Rules between settings (queue thresholds and queue_size, n_ubatch and n_batch, grammar and
json_schema), and merging onto a base config: what is not mentioned keeps the base, and a
rejected document changes nothing."""
from __future__ import annotations

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import parse_config, parse_overrides, request_params
from config_cases import raises_naming


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


def test_a_json_schema_text_nested_past_the_stack_is_invalid_not_a_crash():
    deep = "[" * 5000 + "]" * 5000   # json.loads raises RecursionError, not ValueError
    with pytest.raises(errors.InvalidArgument, match="nested too deeply"):
        parse_overrides({"json_schema": deep}, base=request_params(parse_config({})[0]))


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
