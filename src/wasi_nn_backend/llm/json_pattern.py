"""A JSON schema `pattern` (a regular expression the decoded string must match) as GBNF for
the JSON-encoded string, for json_schema.py.

The regex is parsed by Python's own parser (what the `jsonschema` validator uses), so an invalid
pattern is refused with Python's reason. Every character set becomes code point ranges: the
characters a JSON string may hold raw stay in a [class]; `"`, `\\` and the control characters
the set allows are produced as their JSON escapes. Without `^` / `$` the pattern may match
anywhere (JSON schema's search semantics), so any characters may come before / after it.
What a grammar cannot express (lookarounds, backreferences, inline flags, anchors elsewhere)
raises Unsupported: llama.cpp then accepts any string, and so does the converter.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from re import _constants as K  # type: ignore[attr-defined]
from re import _parser as P  # type: ignore[attr-defined]

from .json_rules import CHAR_RULE, SchemaError, Unsupported, format_literal, repetition

MAX_CODE = 0x10FFFF
Ranges = list[tuple[int, int]]
_MUST_ESCAPE = [*range(0x20), 0x22, 0x5C, 0x7F]          # never raw inside a JSON string
_NEVER = ((0xD800, 0xDFFF),)                               # surrogates: no UTF-8 for them
# \d \w \s are ASCII, \D \W \S exclude every Unicode digit / word / space character: what
# the grammar produces matches under Python's rules (the jsonschema package) and ECMA-262's.
_CATEGORIES = {
    K.CATEGORY_DIGIT: ((0x30, 0x39),),
    K.CATEGORY_SPACE: ((0x09, 0x0D), (0x20, 0x20)),
    K.CATEGORY_WORD: ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
}
_NOT_CATEGORIES = {K.CATEGORY_NOT_DIGIT: str.isdecimal, K.CATEGORY_NOT_SPACE: str.isspace,
                   K.CATEGORY_NOT_WORD: lambda c: c.isalnum() or c == "_"}


@functools.cache
def _unicode_class(test: Callable[[str], bool]) -> tuple[tuple[int, int], ...]:
    """The code point ranges whose characters pass ``test`` (one pass, cached)."""
    ranges: Ranges = []
    for code in range(MAX_CODE + 1):
        if test(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return tuple(ranges)


def _normalize(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in _normalize(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE:
        out.append((start, MAX_CODE))
    return out


def _minus(ranges: Ranges, remove: Ranges) -> Ranges:
    keep = _complement(remove)
    return _normalize([(max(a, c), min(b, d)) for a, b in ranges for c, d in keep
                       if max(a, c) <= min(b, d)])


def _class_char(code: int) -> str:
    if chr(code).isalnum() and code < 0x80:
        return chr(code)
    return f"\\x{code:02X}" if code < 0x100 else (
        f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}")


def _json_escape(code: int) -> str:
    return json.dumps(chr(code))[1:-1]


def charset(ranges: Ranges) -> str:
    """GBNF matching one JSON-encoded character of the set (raw where JSON allows, else escaped)."""
    ranges = _normalize(ranges)
    plain = _minus(ranges, [(c, c) for c in _MUST_ESCAPE] + list(_NEVER))
    alts = []
    if plain:
        alts.append("[" + "".join(_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}"
                                  for a, b in plain) + "]")
    alts += [format_literal(_json_escape(c)) for c in _MUST_ESCAPE
             if any(a <= c <= b for a, b in ranges)]
    if not alts:
        raise Unsupported("a character set that matches nothing")
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def any_char_ranges() -> Ranges:
    return [(0, MAX_CODE)]


def _in_ranges(items: list) -> Ranges:
    ranges: Ranges = []
    negate = False
    for op, arg in items:
        if op is K.NEGATE:
            negate = True
        elif op is K.LITERAL:
            ranges.append((arg, arg))
        elif op is K.RANGE:
            ranges.append(arg)
        elif op is K.CATEGORY and arg in _CATEGORIES:
            ranges += _CATEGORIES[arg]
        elif op is K.CATEGORY and arg in _NOT_CATEGORIES:
            ranges += _complement(list(_unicode_class(_NOT_CATEGORIES[arg])))
        else:
            raise Unsupported(f"character class item {op}")
    return _complement(ranges) if negate else _normalize(ranges)


class PatternConverter:
    """pattern -> GBNF of the quoted JSON string; ``add_rule(name, text)`` names shared parts."""

    def __init__(self, add_rule: Callable[[str, str], str], name: str) -> None:
        self._add_rule, self._name = add_rule, name

    def convert(self, pattern: str) -> str:
        try:
            parsed = P.parse(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
            raise SchemaError(f"pattern {shown!r} is not a valid regular expression: {exc}") \
                from None
        if parsed.state.flags & (re.I | re.M | re.S | re.X | re.A | re.L):
            raise Unsupported("inline flags")
        items = list(parsed)
        start = bool(items) and items[0] == (K.AT, K.AT_BEGINNING)
        end = bool(items) and items[-1][0] is K.AT and items[-1][1] in (K.AT_END, K.AT_END_STRING)
        items = items[1 if start else 0:len(items) - (1 if end and len(items) > start else 0)]
        body = self._sequence(items)
        pad = self._add_rule("char", CHAR_RULE) + "*"
        parts = ([] if start else [pad]) + [f"({body})"] + ([] if end else [pad])
        return '"\\"" ' + " ".join(parts) + ' "\\""'

    def _set(self, ranges: Ranges) -> str:
        text = charset(ranges)
        return self._add_rule(f"{self._name}-set", text) if "|" in text else text

    def _sequence(self, items: list) -> str:
        parts: list[str] = []
        literal = ""
        for op, arg in items:
            if op is K.LITERAL:
                literal += chr(arg)
                continue
            if literal:
                parts.append(format_literal(json.dumps(literal, ensure_ascii=False)[1:-1]))
                literal = ""
            parts.append(self._item(op, arg))
        if literal:
            parts.append(format_literal(json.dumps(literal, ensure_ascii=False)[1:-1]))
        return " ".join(parts) if parts else '""'

    def _item(self, op: object, arg: object) -> str:
        if op is K.LITERAL:
            return self._set([(arg, arg)])  # type: ignore[list-item]
        if op is K.NOT_LITERAL:
            return self._set(_complement([(arg, arg)]))  # type: ignore[list-item]
        if op is K.ANY:   # no line terminator, as ECMA-262 (Python's `.` excludes only \n)
            return self._set(_complement([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]))
        if op is K.IN:
            return self._set(_in_ranges(arg))  # type: ignore[arg-type]
        if op is K.BRANCH:
            return "(" + " | ".join(self._sequence(list(seq)) for seq in arg[1]) + ")"  # type: ignore[index]
        if op is K.SUBPATTERN:
            _group, add_flags, del_flags, sub = arg  # type: ignore[misc]
            if add_flags or del_flags:
                raise Unsupported("inline flags")
            return "(" + self._sequence(list(sub)) + ")"
        if op in (K.MAX_REPEAT, K.MIN_REPEAT, getattr(K, "POSSESSIVE_REPEAT", K.MAX_REPEAT)):
            lo, hi, sub = arg  # type: ignore[misc]
            item = "(" + self._sequence(list(sub)) + ")"
            return repetition(item, lo, None if hi == K.MAXREPEAT else hi) or '""'
        raise Unsupported(f"{str(op).lower()} has no grammar equivalent")
