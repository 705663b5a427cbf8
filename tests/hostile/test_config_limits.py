"""Configuration documents cost time and memory linear in their size, with a cap: thousands of
unknown keys get a few warnings (not a difflib pass and a log line each: 8,000 keys took 14 s),
and a document over the byte or key limit is too_large on every channel (backend init, model
load, runtime overrides, set_input metadata) before it is walked."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.config import RequestParams, parse_config, parse_overrides
from wasi_nn_backend.config.parse import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_KEYS
from wasi_nn_backend.config.walk import MAX_UNKNOWN_WARNINGS
from wasi_nn_backend.errors import ErrorCode, TooLarge

QUIET = json.dumps({"logging": {"level": "error"}, "model": {"n_ctx": 128, "threads": 1}})


def test_thousands_of_unknown_keys_give_a_few_warnings(monkeypatch):
    import difflib
    calls = []
    real = difflib.get_close_matches
    monkeypatch.setattr(difflib, "get_close_matches",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    doc = {f"unknown_key_{i}": i for i in range(MAX_DOCUMENT_KEYS - 1)} | {"temprature": 0.5}
    _, warnings = parse_config(json.dumps(doc))
    assert len(warnings) == MAX_UNKNOWN_WARNINGS + 1
    assert warnings[-1] == f"{MAX_DOCUMENT_KEYS - MAX_UNKNOWN_WARNINGS} more unknown keys; ignored"
    assert len(calls) <= MAX_UNKNOWN_WARNINGS
    _, warnings = parse_overrides({"temprature": 0.5}, base=RequestParams())
    assert warnings == ["temprature: unknown key; ignored (did you mean 'temperature'?)"]


@pytest.mark.parametrize("doc", [
    json.dumps({"sampling": {"grammar": "x" * MAX_DOCUMENT_BYTES}}),
    json.dumps({f"k{i}": 0 for i in range(MAX_DOCUMENT_KEYS + 1)}),
    json.dumps({"a": [{f"k{i}": 0} for i in range(MAX_DOCUMENT_KEYS + 1)]}),
    {f"k{i}": 0 for i in range(MAX_DOCUMENT_KEYS + 1)},
], ids=["bytes", "keys", "nested-keys", "dict"])
def test_a_document_over_the_limits_is_too_large(doc):
    with pytest.raises(TooLarge):
        parse_config(doc)
    with pytest.raises(TooLarge):
        parse_overrides(doc, base=RequestParams())


def test_every_channel_answers_too_large_and_keeps_working(tiny_model_path):
    huge = json.dumps({f"unknown_{i}": i for i in range(MAX_DOCUMENT_KEYS + 1)})
    assert nn.init_backend_with_config(huge)[0] == ErrorCode.TOO_LARGE
    code, ctx = nn.init_backend_with_config(QUIET)
    try:
        code, _ = nn.load_by_name_with_config(ctx, tiny_model_path, None, huge)
        assert code == ErrorCode.TOO_LARGE
        code, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, QUIET)
        code, ex = nn.init_execution_context(ctx, graph)
        assert nn.set_input(ctx, ex, 1, huge.encode()) == ErrorCode.TOO_LARGE
        out = bytearray(256)
        code, _ = nn.run_inference(ctx, ex, 0, "Hi", out, huge)
        assert code == ErrorCode.TOO_LARGE
        code, _ = nn.run_inference(ctx, ex, 0, "Hi", out, '{"max_tokens": 2, "temperature": 0}')
        assert code == ErrorCode.SUCCESS
    finally:
        nn.deinit_backend(ctx)


@pytest.mark.parametrize("key, most, longest", [
    ("stop", 32, 256), ("dry_sequence_breakers", 64, 256), ("grammar_trigger_words", 64, 256),
    ("grammar_trigger_patterns", 64, 1024)])
def test_lists_checked_after_every_token_are_bounded(key, most, longest):
    """Stop strings and grammar triggers are checked against the text after every token on the
    engine thread, for every session: a request may not make that cost unbounded."""
    from wasi_nn_backend.errors import InvalidArgument
    base = RequestParams()
    parse_overrides({key: [f"s{i}" for i in range(most)]}, base=base)
    parse_overrides({key: ["x" * longest]}, base=base)
    with pytest.raises(InvalidArgument, match=f"at most {most} items"):
        parse_overrides({key: [f"s{i}" for i in range(most + 1)]}, base=base)
    with pytest.raises(InvalidArgument, match=rf"{key}\[1\]: too long"):
        parse_overrides({key: ["ok", "x" * (longest + 1)]}, base=base)
