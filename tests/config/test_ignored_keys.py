"""Keys that are ignored with a warning: unknown keys (with their path, logged), keys with no
effect here, per-request keys in a config and load-time keys in overrides."""
from __future__ import annotations

import logging

from wasi_nn_backend.config import Config, RequestParams, parse_config, parse_overrides


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
