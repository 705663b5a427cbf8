"""Values of the wrong type or out of range are invalid_argument naming the path, the value and
what is accepted, all of them at once; ints are fine for floats, null resets optionals."""
from __future__ import annotations

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import parse_config
from config_cases import raises_naming


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
