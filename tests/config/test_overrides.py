"""Per-request overrides (parse_overrides): new RequestParams every time, the base untouched;
every accepted form; errors name the path; request_params come from the config."""
from __future__ import annotations

import math

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import RequestParams, parse_config, parse_overrides, request_params
from config_cases import ORIGINAL_CONFIGS, raises_naming


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
