"""Object rules for the JSON-schema converter (json_schema.py), after llama.cpp's
_build_object_rule, _not_strings and allOf merging: required properties in order, optional ones
in any suffix order, additional properties whose keys are none of the declared names.

``conv`` is the converter: ``add_rule(name, text)``, ``primitive(name, kind)`` and
``visit(schema, name, path)``.
"""
from __future__ import annotations

import json
from typing import Any

from .json_rules import SchemaError, constant, format_literal


def _encoded(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)[1:-1]


def not_strings(conv: Any, names: list[str]) -> str:
    """A JSON string that is none of ``names`` (a trie over their JSON-encoded text):
    not_strings(["a"]) -> "\"" ( [a] char+ | [^"a...] char* | escape char* )? "\"" ."""
    char = conv.primitive("char", "char")
    encoded = [_encoded(n) for n in names]
    if any("\\" in e for e in encoded):  # an escape inside a name: keep the rule simple
        return conv.primitive("string", "string")
    trie: dict = {}
    for text in encoded:
        node = trie
        for ch in text:
            node = node.setdefault(ch, {})
        node[""] = {}                      # a name ends here

    def visit(node: dict) -> str:
        alts, rejects = [], ""
        for ch, child in node.items():
            if ch:
                rejects += ch
                more = any(child)
                alts.append(format_literal(ch) + (f" ({visit(child)})" if more else f" {char}+"))
        others = "".join(f"\\x{ord(c):02X}" if ord(c) < 0x80 else c for c in rejects)
        alts.append(f'[^"\\\\\\x7F\\x00-\\x1F{others}] {char}*')
        alts.append(f'[\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{{4}}) {char}*')
        return " | ".join(alts)

    body = f"( {visit(trie)} )" + ("" if "" in trie else "?")
    return f'"\\"" {body} "\\""'


def object_rule(conv: Any, props: list[tuple[str, Any]], required: set[str], name: str,
                path: str, extra: Any) -> str:
    """The rule text of an object with ``props``; ``extra`` = additionalProperties."""
    prefix = name + "-" if name else ""
    kv: dict[str, str] = {}
    required_props, optional_props = [], []
    for prop, schema in props:
        value = conv.visit(schema, prefix + prop, f"{path}/properties/{prop}")
        kv[prop] = conv.add_rule(f"{prefix}{prop}-kv",
                                 f'{format_literal(json.dumps(prop, ensure_ascii=False))} '
                                 f'space ":" space {value}')
        (required_props if prop in required else optional_props).append(prop)
    if extra is not False and extra is not None:
        sub = prefix + "additional"
        value = (conv.primitive("value", "value") if extra is True or extra == {}
                 else conv.visit(extra, f"{sub}-value", f"{path}/additionalProperties"))
        key = (conv.primitive("string", "string") if not props
               else conv.add_rule(f"{sub}-k", not_strings(conv, [p for p, _ in props])))
        kv["*"] = conv.add_rule(f"{sub}-kv", f'{key} ":" space {value}')
        optional_props.append("*")
    if not required_props and not optional_props:
        return '"{" space "}"'
    rule = '"{" space ' + ' "," space '.join(kv[p] for p in required_props)
    if optional_props:
        def rest(keys: list[str], first_optional: bool) -> str:
            if not keys:
                return ""
            k, comma = keys[0], f'( "," space {kv[keys[0]]} )'
            res = (comma + ("*" if k == "*" else "?") if first_optional
                   else kv[k] + (f" {comma}*" if k == "*" else ""))
            if len(keys) > 1:
                res += " " + conv.add_rule(f"{prefix}{k}-rest", rest(keys[1:], True))
            return res
        rule += " ("
        if required_props:
            rule += ' "," space ( '
        rule += " | ".join(rest(optional_props[i:], False) for i in range(len(optional_props)))
        if required_props:
            rule += " )"
        rule += " )?"
    return rule + ' space "}"'


def all_of_rule(conv: Any, parts: list, name: str, rule_name: str, path: str) -> str:
    """allOf: the union of the parts' properties (anyOf parts' ones optional), or the enum
    values every part allows."""
    props: list[tuple[str, Any]] = []
    required: set[str] = set()
    counts: dict[str, int] = {}

    def add(part: Any, is_required: bool, depth: int = 0) -> None:
        if not isinstance(part, dict) or depth > 32:
            return
        if "$ref" in part:
            ref = part["$ref"]
            target: Any = conv.resolve_pointer(ref, path) if isinstance(ref, str) else None
            add(target, is_required, depth + 1)
        elif "properties" in part:
            properties, names = part["properties"] or {}, part.get("required") or []
            if not isinstance(properties, dict) or not isinstance(names, list):
                raise SchemaError(f"JSON schema error at {path}/allOf: properties must be an "
                                  "object and required a list")
            for prop, schema in properties.items():
                props.append((prop, schema))
                if is_required and prop in names:
                    required.add(prop)
        elif isinstance(part.get("enum"), list) or "const" in part:
            values = part["enum"] if "enum" in part else [part["const"]]
            for value in {constant(v) for v in values}:
                counts[value] = counts.get(value, 0) + 1

    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("anyOf"), list):
            for alt in part["anyOf"]:
                add(alt, False)
        else:
            add(part, True)
    common = [v for v, n in counts.items() if n == len(parts)]
    if common:
        return conv.add_rule(rule_name, "(" + " | ".join(common) + ")")
    return conv.add_rule(rule_name, object_rule(conv, props, required, name, path, None))
