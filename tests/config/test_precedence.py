"""When several spellings of one setting are given, which one wins does not depend on their
order; a losing spelling with another value warns; overrides use the same precedence."""
from __future__ import annotations

import itertools

import pytest

from wasi_nn_backend.config import RequestParams, parse_config, parse_overrides
from config_cases import get


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
