"""GBNF building blocks for the JSON-schema converter (json_schema.py), after llama.cpp's
common/json-schema-to-grammar.cpp: the primitive rules, literals, repetitions, integer ranges,
and `pattern` regexes turned into GBNF.

One rule everywhere: nothing here admits a raw `"`, `\\` or control character (\\x00-\\x1F,
\\x7F) inside a JSON string. Where a pattern allows such a character, the grammar produces its
JSON escape instead, so the output always parses and its decoded value matches the pattern.
Pure Python: no llama_cpp import.
"""
from __future__ import annotations

import json

SPACE_RULE = '| " " | "\\n"{1,2} [ \\t]{0,20}'
CHAR_RULE = '[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{4})'

# name -> (rule text, rules it uses)
PRIMITIVE_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "boolean": ('("true" | "false")', ()),
    "decimal-part": ("[0-9]{1,16}", ()),
    "integral-part": ("[0] | [1-9] [0-9]{0,15}", ()),
    "number": ('("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?',
               ("integral-part", "decimal-part")),
    "integer": ('("-"? integral-part)', ("integral-part",)),
    "value": ("object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": ('"{" space ( string ":" space value ("," space string ":" space value)* )? '
               'space "}"', ("string", "value")),
    "array": ('"[" space ( value ("," space value)* )? space "]"', ("value",)),
    "uuid": ('"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} '
             '"-" [0-9a-fA-F]{12} "\\""', ()),
    "char": (CHAR_RULE, ()),
    "string": ('"\\"" char* "\\""', ("char",)),
    "null": ('"null"', ()),
    "date": ('[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )',
             ()),
    "time": ('([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
             '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )', ()),
    "date-time": ('date "T" time', ("date", "time")),
    "date-string": ('"\\"" date "\\""', ("date",)),
    "time-string": ('"\\"" time "\\""', ("time",)),
    "date-time-string": ('"\\"" date-time "\\""', ("date-time",)),
}
MAX_REPEAT = 4096     # llama.cpp expands x{n} into n copies: bound what a schema can ask for


class SchemaError(ValueError):
    """A schema the converter cannot turn into a grammar; the message is for a person."""


class Unsupported(Exception):
    """A valid regex with no grammar equivalent (llama.cpp then accepts any string)."""


def format_literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def constant(value: object) -> str:
    """The GBNF literal of a JSON value, as compact JSON (enum, const)."""
    return format_literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def repetition(item: str, lo: int, hi: int | None, separator: str = "") -> str:
    """``item`` lo..hi times (hi None = unbounded), optionally separated."""
    for count in (lo, hi):
        if count is not None and count > MAX_REPEAT:
            raise SchemaError(f"a repetition count of {count} is more than {MAX_REPEAT}")
    if hi == 0:
        return ""
    if lo == 0 and hi == 1:
        return item + "?"
    if not separator:
        if lo == 1 and hi is None:
            return item + "+"
        if lo == 0 and hi is None:
            return item + "*"
        return item + "{" + str(lo) + "," + ("" if hi is None else str(hi)) + "}"
    rest = repetition(f"({separator} {item})", max(lo - 1, 0), None if hi is None else hi - 1)
    result = f"{item} {rest}"
    return f"({result})?" if lo == 0 else result


# ---- integer ranges (build_min_max_int, same output) -----------------------------------------

def _more_digits(lo: int, hi: int | None) -> str:
    if lo == hi == 1:
        return "[0-9]"
    return "[0-9]{" + str(lo) + ("" if lo == hi else "," + ("" if hi is None else str(hi))) + "}"


def _digit_range(a: str, b: str) -> str:
    return f"[{a}]" if a == b else f"[{a}-{b}]"


def _uniform_range(lo: str, hi: str) -> str:
    i = 0
    while i < len(lo) and i < len(hi) and lo[i] == hi[i]:
        i += 1
    out = f'"{lo[:i]}"' if i else ""
    if i < len(lo) and i < len(hi):
        out += " " if i else ""
        sub = len(lo) - i - 1
        if sub > 0:
            lo_sub, hi_sub = lo[i + 1:], hi[i + 1:]
            zeros, nines = "0" * sub, "9" * sub
            reached = False
            out += "("
            if lo_sub == zeros:
                out += _digit_range(lo[i], chr(ord(hi[i]) - 1)) + " " + _more_digits(sub, sub)
            else:
                out += f"[{lo[i]}] (" + _uniform_range(lo_sub, nines) + ")"
                if lo[i] < chr(ord(hi[i]) - 1):
                    out += " | "
                    if hi_sub == nines:
                        out += _digit_range(chr(ord(lo[i]) + 1), hi[i])
                        reached = True
                    else:
                        out += _digit_range(chr(ord(lo[i]) + 1), chr(ord(hi[i]) - 1))
                    out += " " + _more_digits(sub, sub)
            if not reached:
                out += " | " + _digit_range(hi[i], hi[i]) + " " + _uniform_range(zeros, hi_sub)
            out += ")"
        else:
            out += f"[{lo[i]}-{hi[i]}]"
    return out


def int_range(lo: int | None, hi: int | None) -> str:
    """GBNF for the integers in [lo, hi] (None = unbounded; at least one bound given).
    Bounded ranges as llama.cpp's build_min_max_int; a half-open one is the bounded part up to
    the next power of ten plus every longer number (llama.cpp's own recursion there accepts 10
    for minimum 100, and -01 for maximum -1)."""
    if lo is not None and hi is not None:
        if lo < 0 and hi < 0:
            return '"-" (' + int_range(-hi, -lo) + ")"
        out = ""
        if lo < 0:
            out = '"-" (' + int_range(1, -lo) + ") | "
            lo = 0
        lo_s, hi_s = str(lo), str(hi)
        for digits in range(len(lo_s), len(hi_s)):
            out += _uniform_range(lo_s, "9" * digits) + " | "
            lo_s = "1" + "0" * digits
        return out + _uniform_range(lo_s, hi_s)
    if lo is not None:
        if lo <= 0:
            negative = '"-" (' + int_range(1, -lo) + ") | " if lo < 0 else ""
            return negative + "[0] | [1-9] " + _more_digits(0, 15)
        digits = len(str(lo))
        longer = f" | [1-9] {_more_digits(digits, 15)}" if digits < 16 else ""
        return int_range(lo, 10 ** digits - 1) + longer
    assert hi is not None
    if hi >= 0:
        return '"-" [1-9] ' + _more_digits(0, 15) + " | " + int_range(0, hi)
    return '"-" (' + int_range(-hi, None) + ")"
