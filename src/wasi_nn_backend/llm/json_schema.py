"""JSON schema -> GBNF, written to llama.cpp's current rules (common/json-schema.cpp and
common/json-schema-to-grammar.cpp) instead of llama-cpp-python 0.3.36's old copy, whose string
rule admitted raw newlines and control characters (output that json.loads refuses).

Supported: type (and lists of types), properties / required / additionalProperties, items /
prefixItems / minItems / maxItems, minLength / maxLength, pattern (json_pattern.py), format
date / time / date-time / uuid, enum / const, anyOf / oneOf / allOf, $ref into the same document
(#/$defs/..., #/definitions/..., any #/ pointer; recursion allowed), integer minimum / maximum /
exclusiveMinimum / exclusiveMaximum. Keywords it does not know constrain nothing (as llama.cpp).
A schema it cannot use raises SchemaError with a one-line message naming where
("JSON schema error at #/properties/x: ..."). Pure Python: no llama_cpp import.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from .json_objects import all_of_rule, object_rule
from .json_pattern import PatternConverter
from .json_rules import PRIMITIVE_RULES, SPACE_RULE, SchemaError, Unsupported, constant, \
    int_range, repetition

log = logging.getLogger(__name__)

MAX_DEPTH = 64                      # nested schemas: deeper is refused, not a RecursionError
_INVALID_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")
_FORMATS = {"date": "date-string", "time": "time-string", "date-time": "date-time-string"}
_STRING_KEYS = ("pattern", "minLength", "maxLength")


def schema_to_gbnf(schema: Any) -> str:
    """The GBNF (root rule 'root') for a parsed JSON schema; SchemaError if it cannot be used."""
    if schema is True:
        schema = {}
    return _Converter(schema).convert()


def _fail(path: str, message: str) -> None:
    where = path if len(path) <= 100 else "..." + path[-97:]
    raise SchemaError(f"JSON schema error at {where}: {message}")


def _count(schema: dict, key: str, path: str, default: int | None) -> int | None:
    if key not in schema:
        return default
    value = schema[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(path, f"{key} must be a non-negative integer")
    return value


def _bound(schema: dict, key: str, path: str, round_up: bool) -> int:
    value = schema[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")):
        _fail(path, f"{key} must be a number")
    if isinstance(value, int):
        return value
    return int(-(-value // 1)) if round_up else int(value // 1)


def _format(schema: dict, path: str) -> str | None:
    value = schema.get("format")
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(path, "format must be a string")
    if value in _FORMATS:
        return value
    if value == "uuid" or re.fullmatch(r"uuid[1-5]", value):
        return "uuid"
    return None


class _Converter:
    def __init__(self, root: Any) -> None:
        self._root = root
        self._rules: dict[str, str] = {"space": SPACE_RULE}
        self._resolving: set[str] = set()
        self._depth = 0

    def convert(self) -> str:
        self.visit(self._root, "", "#")
        return "".join(f"{name} ::= {rule}\n" for name, rule in sorted(self._rules.items()))

    # ---- rules ---------------------------------------------------------------------------

    def add_rule(self, name: str, rule: str) -> str:
        key = _INVALID_RULE_CHARS.sub("-", name)
        if self._rules.get(key, rule) == rule:
            self._rules[key] = rule
            return key
        i = 0
        while f"{key}{i}" in self._rules and self._rules[f"{key}{i}"] != rule:
            i += 1
        self._rules[f"{key}{i}"] = rule
        return f"{key}{i}"

    def primitive(self, name: str, kind: str) -> str:
        rule, deps = PRIMITIVE_RULES[kind]
        result = self.add_rule(name, rule)
        for dep in deps:
            if dep not in self._rules:
                self.primitive(dep, dep)
        return result

    # ---- schemas -------------------------------------------------------------------------

    def visit(self, schema: Any, name: str, path: str) -> str:
        if not isinstance(schema, dict):
            if schema is True:
                schema = {}
            else:
                _fail(path, "a schema must be an object")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            _fail(path, f"schemas nest deeper than {MAX_DEPTH} levels")
        try:
            return self._visit(schema, name, path)
        finally:
            self._depth -= 1

    def _visit(self, schema: dict, name: str, path: str) -> str:
        rule_name = (name + "-" if name in PRIMITIVE_RULES or name == "root"
                     else name or "root")
        sub = name + "-" if name else ""
        if "$ref" in schema:
            return self.add_rule(rule_name, self._ref(schema["$ref"], path))
        for key in ("oneOf", "anyOf"):
            if key in schema:
                alts = self._alternatives(schema[key], f"{path}/{key}")
                return self.add_rule(rule_name, " | ".join(
                    self.visit(alt, f"{name or 'alternative'}-{i}", f"{path}/{key}/{i}")
                    for i, alt in enumerate(alts)))
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                _fail(path, "type must not be empty")
            return self.add_rule(rule_name, " | ".join(
                self.visit({**schema, "type": t}, f"{name or 'alternative'}-{i}",
                           f"{path}/type/{i}") for i, t in enumerate(kind)))
        if "const" in schema:
            return self.add_rule(rule_name, constant(schema["const"]))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                _fail(path, "enum must be a non-empty array")
            return self.add_rule(rule_name, "(" + " | ".join(constant(v) for v in values) + ")")
        if kind is not None and not isinstance(kind, str):
            _fail(path, "type must be a string or an array of strings")
        has_props = "properties" in schema or schema.get("additionalProperties", True) is not True
        if kind is None:
            if has_props:
                return self.add_rule(rule_name, self._object(schema, name, path))
            if "allOf" in schema:
                return self._all_of(schema["allOf"], name, rule_name, f"{path}/allOf")
            if "items" in schema or "prefixItems" in schema:
                return self._array(schema, name, sub, rule_name, path)
            if any(k in schema for k in _STRING_KEYS) or _format(schema, path):
                return self._string(schema, rule_name, path)
            return self.add_rule(rule_name, self.primitive("value", "value"))
        if kind == "object":
            if not has_props and "allOf" in schema:
                return self._all_of(schema["allOf"], name, rule_name, f"{path}/allOf")
            if not has_props:
                return self.add_rule(rule_name, self.primitive("object", "object"))
            return self.add_rule(rule_name, self._object(schema, name, path))
        if kind == "string":
            return self._string(schema, rule_name, path)
        if kind == "array":
            return self._array(schema, name, sub, rule_name, path)
        if kind == "integer":
            return self._integer(schema, rule_name, path)
        if kind in ("number", "boolean", "null"):
            return self.primitive("root" if rule_name == "root" else kind, kind)
        _fail(path, f"unrecognized type {kind!r}")
        raise AssertionError  # unreachable: _fail raises

    def _alternatives(self, alts: Any, path: str) -> list:
        if not isinstance(alts, list):
            _fail(path, "must be an array of schemas")
        if not alts:
            _fail(path, "must not be empty")
        return alts

    def _ref(self, ref: Any, path: str) -> str:
        if not isinstance(ref, str):
            _fail(path, "$ref must be a string")
        if not ref.startswith("#/") and ref != "#":
            _fail(path, f"unsupported $ref {ref}: only references into the same document "
                        "(#/$defs/..., #/definitions/...)")
        name = "ref" + _INVALID_RULE_CHARS.sub("-", ref[1:])
        if name in self._rules or ref in self._resolving:
            return name
        target = self.resolve_pointer(ref, path)
        self._resolving.add(ref)
        try:
            return self.visit(target, name, ref)
        finally:
            self._resolving.discard(ref)

    def resolve_pointer(self, ref: str, path: str) -> Any:
        """The schema a local $ref ('#', '#/a/b', with ~0 ~1 escapes) points to."""
        target: Any = self._root
        for token in ref[2:].split("/") if ref.startswith("#/") else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                _fail(path, f"cannot resolve $ref {ref}: {token} not found")
        return target

    def _string(self, schema: dict, rule_name: str, path: str) -> str:
        pattern = schema.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str):
                _fail(path, "pattern must be a string")
            saved = dict(self._rules)
            try:
                return self.add_rule(rule_name, PatternConverter(self.add_rule, rule_name)
                                     .convert(pattern))
            except SchemaError as exc:
                _fail(path, str(exc))
            except Unsupported as exc:
                self._rules = saved
                log.warning("json_schema: pattern %r is not supported (%s); accepting any "
                            "string", pattern, exc)
                return self.add_rule(rule_name, self.primitive("string", "string"))
        fmt = _format(schema, path)
        if fmt == "uuid":
            return self.primitive("root" if rule_name == "root" else "uuid", "uuid")
        if fmt:
            return self.add_rule(rule_name, self.primitive(_FORMATS[fmt], _FORMATS[fmt]))
        lo = _count(schema, "minLength", path, 0) or 0
        hi = _count(schema, "maxLength", path, None)
        if lo > 0 or hi is not None:
            if hi is not None and hi < lo:
                _fail(path, "maxLength is less than minLength")
            char = self.primitive("char", "char")
            return self.add_rule(rule_name, '"\\"" ' + repetition(char, lo, hi) + ' "\\""')
        return self.primitive("root" if rule_name == "root" else "string", "string")

    def _integer(self, schema: dict, rule_name: str, path: str) -> str:
        lo = hi = None
        if "minimum" in schema:
            lo = _bound(schema, "minimum", path, True)
        elif "exclusiveMinimum" in schema:
            lo = _bound(schema, "exclusiveMinimum", path, False) + 1
        if "maximum" in schema:
            hi = _bound(schema, "maximum", path, False)
        elif "exclusiveMaximum" in schema:
            hi = _bound(schema, "exclusiveMaximum", path, True) - 1
        if lo is None and hi is None:
            return self.primitive("root" if rule_name == "root" else "integer", "integer")
        if lo is not None and hi is not None and lo > hi:
            _fail(path, "no integer lies between the minimum and the maximum")
        return self.add_rule(rule_name, "(" + int_range(lo, hi) + ")")

    def _array(self, schema: dict, name: str, sub: str, rule_name: str, path: str) -> str:
        key = "items" if "items" in schema else "prefixItems" if "prefixItems" in schema else None
        items = schema.get(key) if key else None
        if isinstance(items, list):
            parts = [self.visit(item, f"{sub}tuple-{i}", f"{path}/{key}/{i}")
                     for i, item in enumerate(items)]
            return self.add_rule(rule_name, '"[" space ' + ' "," space '.join(parts)
                                 + ' space "]"')
        lo = _count(schema, "minItems", path, 0) or 0
        hi = _count(schema, "maxItems", path, None)
        if hi is not None and hi < lo:
            _fail(path, "maxItems is less than minItems")
        if items is None and lo == 0 and hi is None:
            return self.primitive("root" if rule_name == "root" else "array", "array")
        item = self.visit(items if items is not None else {}, f"{sub}item", f"{path}/{key}")
        return self.add_rule(rule_name, '"[" space ' + repetition(item, lo, hi, '"," space')
                             + ' space "]"')

    def _object(self, schema: dict, name: str, path: str) -> str:
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            _fail(path, "properties must be an object")
        required = schema.get("required", [])
        required = {r for r in required if isinstance(r, str)} if isinstance(required, list) \
            else set()
        extra = schema.get("additionalProperties", False if "properties" in schema else True)
        if not isinstance(extra, (bool, dict)):
            _fail(path, "additionalProperties must be a boolean or a schema")
        return object_rule(self, list(props.items()), required, name, path, extra)

    def _all_of(self, parts: Any, name: str, rule_name: str, path: str) -> str:
        return all_of_rule(self, self._alternatives(parts, path), name, rule_name, path)
