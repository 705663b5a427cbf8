"""JSON schema -> GBNF (llm/json_schema.py): sampled output that ends with EOG parses and
validates, at several seeds and temperatures; bad schemas are one-line invalid_argument."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import SamplingParams
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.gbnf import schema_to_gbnf
from wasi_nn_backend.llm.grammar import GrammarGuard, check_grammar
from wasi_nn_backend.llm.json_rules import int_range

from sampling_loop import sample_text

# Strings are bounded (maxLength) where nothing else ends them: a random tiny model rarely
# picks the closing quote among a whole vocabulary of allowed characters.
S = {"type": "string", "maxLength": 6}
SCHEMAS = {
    "string": {"type": "object", "properties": {"line": S}, "required": ["line"]},
    "nested": {"type": "object", "required": ["user", "tags"], "properties": {
        "user": {"type": "object", "required": ["name", "age"],
                 "properties": {"name": S, "age": {"type": "integer", "minimum": 0,
                                                   "exclusiveMaximum": 130}}},
        "tags": {"type": "array", "items": S, "maxItems": 3}}},
    "array_of_strings": {"type": "array", "items": S, "minItems": 1, "maxItems": 4},
    "enum": {"type": "object", "required": ["colour"],
             "properties": {"colour": {"enum": ["red", "green", "blue", 7, None]},
                            "ok": {"const": True}}},
    "pattern": {"type": "object", "required": ["code", "any"], "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
        "any": {"type": "string", "pattern": "^[^a-z]{1,5}$"}}},
    "formats": {"type": "array", "prefixItems": [
        {"type": "string", "format": "date"}, {"type": "string", "format": "uuid"},
        {"type": "string", "format": "time"}]},
    "refs": {"$defs": {"point": {"type": "object", "required": ["x", "y"], "properties": {
        "x": {"$ref": "#/definitions/coord"}, "y": {"$ref": "#/definitions/coord"}}}},
             "definitions": {"coord": {"type": "integer", "minimum": -50, "maximum": 50}},
             "type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 2},
    "integer_ranges": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"anyOf": [
        {"type": "integer", "minimum": 100, "maximum": 1234},
        {"type": "integer", "exclusiveMinimum": -20, "exclusiveMaximum": -3}]}},
    "all_of": {"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}},
                          "required": ["a"]},
                         {"type": "object", "properties": {"b": {"type": "null"}},
                          "required": ["b"]}]},
    "additional": {"type": "object", "properties": {"k": {"type": "boolean"}},
                   "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9},
                   "maxProperties": 100},
}
RUNS = [(seed, temp) for seed in (1, 2, 3) for temp in (0.0, 0.8, 1.5)]


@pytest.fixture(scope="module")
def ctx(tiny_model):
    with Context(tiny_model, n_ctx=512, n_batch=64, n_threads=2) as context:
        yield context


def generate(ctx, params, steps=160):
    """(text, finished): finished is True when the model ended with EOG within ``steps``."""
    return sample_text(ctx, params, "JSON:", steps)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_sampled_output_parses_and_validates(ctx, name):
    schema, finished = SCHEMAS[name], 0
    for seed, temperature in RUNS:
        params = SamplingParams(temperature=temperature, seed=seed, top_k=0, top_p=1.0,
                                min_p=0.0, json_schema=json.dumps(schema))
        text, stopped = generate(ctx, params)
        if stopped:
            finished += 1
            jsonschema.validate(json.loads(text), schema)
    assert finished >= len(RUNS) // 3, f"only {finished} of {len(RUNS)} runs stopped"


def test_json_mode_any_object(ctx):
    stopped = 0
    for seed, temperature in ((1, 0.8), (1, 1.5), (2, 1.5), (3, 1.5)):
        params = SamplingParams(temperature=temperature, seed=seed, top_k=0, top_p=1.0,
                                min_p=0.0, json_schema='{"type":"object"}')
        text, finished = generate(ctx, params, steps=80)
        assert text.startswith("{")
        if finished:
            stopped += 1
            assert isinstance(json.loads(text), dict)
    assert stopped >= 2


@pytest.mark.parametrize("schema, prefix", [
    ({"type": "object", "properties": {"line": {"type": "string"}}, "required": ["line"]},
     '{"line": "ab'),
    ({"type": "string", "pattern": "^[^a]+$"}, '"bc'),
    ({"type": "string", "pattern": "^x.+$"}, '"xy'),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, '{"ab'),
])
def test_no_raw_control_character_inside_a_string(tiny_model, schema, prefix):
    """Issue 14: the old converter's `char ::= [^"\\] | ...` let a raw newline into a string
    ("Invalid control character" from json.loads); \x00-\x1F and \x7F must be escapes."""
    by_piece = {tiny_model.token_to_piece(t): t for t in range(tiny_model.n_vocab)}
    guard = GrammarGuard(tiny_model, schema_to_gbnf(json.dumps(schema)))
    try:
        for token in tiny_model.tokenize(prefix, add_special=False, parse_special=False):
            guard.accept(token)
        assert guard.allows(by_piece[b"c"])
        for raw in (b"\n", b"\t", b"\x01", b"\x1f", b"\x7f"):
            assert not guard.allows(by_piece[raw]), raw
        guard.accept(by_piece[b"\\"])          # an escape instead: \n
        assert guard.allows(by_piece[b"t"])
    finally:
        guard.close()


@pytest.mark.parametrize("schema, words", [
    ("{not json", ["not valid JSON"]),
    ('{"$ref": "https://example.com/schema.json"}', ["unsupported $ref", "same document"]),
    ('{"$ref": "#/$defs/missing"}', ["cannot resolve", "missing"]),
    ('{"type": "strnig"}', ["unrecognized type", "strnig"]),
    ('{"type": "object", "properties": {"a": {"type": 3}}}', ["#/properties/a", "type"]),
    ('{"type": "string", "pattern": "^(a$"}', ["not a valid regular expression"]),
    ('{"type": "string", "minLength": -1}', ["minLength"]),
    ('{"type": "array", "maxItems": 100000000}', ["repetition"]),
    ('{"enum": []}', ["enum"]),
    ('{"anyOf": 3}', ["anyOf"]),
    ('{"type": "integer", "minimum": 5, "maximum": 1}', ["no integer"]),
    ('{"items": ' * 200 + "{}" + "}" * 200, ["nest deeper"]),
    ('{"type": "string", "pattern": "' + "(" * 2000 + "a" + ")" * 2000 + '"}',
     ["not a valid regular expression"]),
    ('{"allOf": [{"properties": [1]}]}', ["allOf", "properties must be an object"]),
    ('{"allOf": [{"properties": {"a": {}}, "required": 5}]}', ["allOf", "required a list"]),
    ('{"allOf": [{"anyOf": [{"properties": "x"}]}]}', ["allOf"]),
])
def test_bad_schema_is_one_line_invalid_argument(ctx, schema, words):
    with pytest.raises(errors.InvalidArgument) as info:
        check_grammar(ctx.model, SamplingParams(json_schema=schema))
    message = info.value.message
    assert "\n" not in message and "Error(" not in message and "Traceback" not in message
    assert len(message) < 300, message
    for word in words:
        assert word in message, message


def test_unsupported_pattern_falls_back_to_any_string_with_a_warning(caplog):
    gbnf = schema_to_gbnf('{"type": "string", "pattern": "^(?=a)b$"}')
    assert 'root ::= string' in gbnf or "root ::= \"\\\"\" char* \"\\\"\"" in gbnf
    assert "not supported" in caplog.text


@pytest.mark.parametrize("grammar, reason", [
    ('root ::= "yes', "unexpected end of input"),
    ("root ::= undefined", "undefined"),
    ('root ::= root "x"', "left recursion"),
])
def test_bad_grammar_error_is_said_once(ctx, capfd, caplog, grammar, reason):
    """Issue 14: llama.cpp's parser report on stderr, its "failed to parse grammar" log line and
    the error were three copies; only the InvalidArgument remains, with the reason."""
    with pytest.raises(errors.InvalidArgument, match=re.compile(reason, re.I)) as info:
        check_grammar(ctx.model, SamplingParams(grammar=grammar))
    assert "\n" not in info.value.message
    assert capfd.readouterr().err == ""
    assert not [r for r in caplog.records if "grammar" in r.getMessage()]


def _gbnf_to_regex(gbnf: str) -> re.Pattern[str]:
    """An integer-range rule ("lit", [class], {m,n}, |, parens) as a Python regex."""
    return re.compile(re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), gbnf)
                      .replace(" ", ""))


@pytest.mark.parametrize("lo, hi", [
    (lo, hi) for lo in (None, -120, -15, -1, 0, 1, 9, 10, 42, 100, 123, 1000)
    for hi in (None, -20, -3, 0, 7, 10, 99, 150, 999, 1234)
    if (lo is not None or hi is not None) and (lo is None or hi is None or lo <= hi)])
def test_integer_ranges_match_exactly_the_integers_in_range(lo, hi):
    """minimum 100 once admitted 10 (llama.cpp's recursion on "00"); maximum -1 admitted -01."""
    rx = _gbnf_to_regex(int_range(lo, hi))
    wrong = [n for n in range(-1300, 1300)
             if bool(rx.fullmatch(str(n))) != ((lo is None or n >= lo) and (hi is None or n <= hi))]
    assert wrong == []
    assert not [s for s in ("01", "007", "-01", "-0", "") if rx.fullmatch(s)]


def _grammar_accepts(model, by_piece, gbnf: str, text: str) -> bool:
    """Whether llama.cpp's grammar takes ``text`` whole, fed one byte token at a time."""
    guard = GrammarGuard(model, gbnf)
    try:
        for byte in text.encode("utf-8"):
            token = by_piece[bytes([byte])]
            if not guard.allows(token):
                return False
            guard.accept(token)
        return guard.is_complete()
    finally:
        guard.close()


@pytest.mark.parametrize("pattern", [
    "^[A-Z]{2}-\\d{1,2}$", "^a.b$", "^[^a]+$", "b", "^(ab|c)*$", "^\\w\\s?\\W$", '^"\\\\$',
    "^[\\n\\t -~]{0,3}$", "^x?é$",
])
def test_pattern_grammar_takes_exactly_the_matching_strings(tiny_model, pattern):
    """The JSON-encoded string is taken iff its decoded value matches (re.search, as the
    jsonschema validator does), for strings over letters, digits, quotes, backslashes and
    control characters."""
    by_piece = {}
    for token in range(tiny_model.n_vocab):
        by_piece.setdefault(tiny_model.token_to_piece(token), token)
    gbnf = schema_to_gbnf(json.dumps({"type": "string", "pattern": pattern}))
    alphabet = ["a", "b", "c", "x", "A", "Z", "0", "5", "-", " ", '"', "\\", "\n", "\t", "\x01",
                "é", "_", "~"]
    rng = __import__("random").Random(pattern)
    samples = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))
               for _ in range(150)}
    samples |= {"AB-1", "AB-12", "a\nb", "axb", 'a"b', "ab", "ccab", '"\\', "x é", "é", "\n\t~",
                "a_ -", "ab_"}
    end = re.compile(pattern[:-1] + "\\Z" if pattern.endswith("$") else pattern)  # ECMA's $
    wrong = [s for s in sorted(samples)
             if _grammar_accepts(tiny_model, by_piece, gbnf, json.dumps(s, ensure_ascii=False))
             != bool(end.search(s))]
    assert wrong == []


@pytest.mark.parametrize("schema, docs", [
    ({"type": "object", "properties": {"k": {"type": "boolean"}},
      "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9}},
     ['{"k":true}', '{"k":true,"a":1}', '{"a":1,"kk":2}', '{"k":1}', '{"a":10}', '{"\\u0041":3}',
      '{"k":true,"":0}', '{}', '{"é":5}']),
    ({"type": "object", "properties": {"a": {"type": "string", "maxLength": 2},
                                       "b": {"enum": ["x", 1, None]}}, "required": ["b"]},
     ['{"b":"x"}', '{"b":1,"a":""}', '{"b":1,"a":"abc"}', '{"b":2}', '{"b":null,"a":"\\n"}',
      '{"b":null,"a":"\n"}', '{"b":null,"a":"q"}', '{ "b" : "x" }']),
    ({"type": "array", "prefixItems": [{"type": "string", "format": "date"},
                                       {"type": "string", "format": "uuid"}]},
     ['["2024-02-29","123e4567-e89b-12d3-a456-426614174000"]', '["2024-13-01","x"]']),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]},
                {"$ref": "#/$defs/b"}], "$defs": {"b": {"type": "object", "required": ["b"],
                                                        "properties": {"b": {"type": "null"}}}}},
     ['{"a":true,"b":null}', '{"a":true}', '{"b":null}']),
])
def test_schema_grammar_takes_exactly_the_valid_documents(tiny_model, schema, docs):
    """Fed byte by byte, a document is taken iff it validates. Properties come in llama.cpp's
    order (required ones first, then optional ones as declared): other orders, valid too, are
    not produced, so the documents here use that order."""
    by_piece = {}
    for token in range(tiny_model.n_vocab):
        by_piece.setdefault(tiny_model.token_to_piece(token), token)
    gbnf = schema_to_gbnf(json.dumps(schema))
    for doc in docs:
        try:
            value, valid = json.loads(doc), True
            jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
        except (ValueError, jsonschema.ValidationError):
            valid = False
        assert _grammar_accepts(tiny_model, by_piece, gbnf, doc) == valid, doc
