"""JSON mode without a schema (issue 14): `response_format` as llama-cpp-python and
llama-server take it, a spelling of sampling.json_schema, per load or per request."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import Backend, errors
from wasi_nn_backend.config import parse_config


@pytest.mark.parametrize("doc, schema", [
    ({"response_format": {"type": "json_object"}}, '{"type":"object"}'),
    ({"sampling": {"response_format": {"type": "json_object",
                                       "schema": {"type": "string"}}}}, '{"type":"string"}'),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "n", "schema": {"enum": [1, 2]}}}},
     '{"enum":[1,2]}'),
    ({"response_format": {"type": "text"}}, ""),
])
def test_response_format_sets_json_schema(doc, schema):
    config, warnings = parse_config(doc)
    assert config.sampling.json_schema == schema and warnings == []


@pytest.mark.parametrize("doc, words", [
    ({"response_format": {"type": "xml"}}, ["response_format.type", "json_object"]),
    ({"response_format": "json"}, ["response_format", "json_object"]),
    ({"response_format": {"type": "json_schema"}}, ["response_format.json_schema.schema"]),
    ({"response_format": {"type": "json_object"}, "grammar": 'root ::= "a"'}, ["exclusive"]),
])
def test_bad_response_format_is_invalid_argument(doc, words):
    with pytest.raises(errors.InvalidArgument) as info:
        parse_config(doc)
    for word in words:
        assert word in info.value.message


def test_json_mode_request_gives_a_json_object(tiny_model_path):
    with Backend() as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 512, "n_seq_max": 2}})
        with graph.session() as session:
            stopped = 0
            for seed in (1, 2, 3, 4):
                reply = session.complete("JSON:", max_tokens=80, seed=seed, temperature=1.5,
                                         top_k=0, top_p=1.0, min_p=0.0,
                                         response_format={"type": "json_object"})
                assert reply.text.startswith("{")
                if reply.finish_reason == "stop":
                    stopped += 1
                    assert isinstance(json.loads(reply.text), dict)
            assert stopped >= 1
