"""What grammar SamplingParams ask for, checked in Python before llama.cpp sees any of it: the
GBNF text (``grammar``, or ``json_schema`` converted by json_schema.py), bounded so that
llama.cpp's recursive parser cannot overflow the C stack, and the lazy-grammar triggers,
compiled and matched with Python ``re`` by llama.cpp's rules (grammar.py says why llama.cpp's
own lazy mode is not used).

Pure Python, no C handle: GrammarGuard (grammar.py) owns the llama.cpp grammar made from this.
"""
from __future__ import annotations

import functools
import json
import re

from .. import errors
from ..config import SamplingParams
from . import json_schema
from .json_rules import SchemaError


@functools.lru_cache(maxsize=64)
def schema_to_gbnf(schema_text: str) -> str:
    """JSON schema text -> GBNF (root rule 'root', json_schema.py); any problem ->
    InvalidArgument with a one-line message. Cached: a schema is converted (and an unsupported
    pattern in it logged) once, not at every check and request."""
    try:
        schema = json.loads(schema_text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise errors.InvalidArgument(f"json_schema is not valid JSON: {exc}") from None
    try:
        return json_schema.schema_to_gbnf(schema)
    except SchemaError as exc:
        raise errors.InvalidArgument(f"json_schema: {exc}") from None
    except RecursionError:
        raise errors.InvalidArgument("json_schema nests too deeply to convert") from None
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        # A shape the converter's checks missed: still the caller's schema, not our bug.
        raise errors.InvalidArgument(f"json_schema cannot be converted: {exc}") from None


# llama.cpp's GBNF parser and its left-recursion check recurse in C without a depth limit; a
# hostile grammar could overflow the C stack (a crash, not an exception). Bound the input.
MAX_GRAMMAR_BYTES = 1 << 20
MAX_GRAMMAR_NESTING = 256
MAX_GRAMMAR_RULES = 10_000
_RULE_DEF = re.compile(r"(?m)^[ \t]*([a-zA-Z0-9_-]+)[ \t]*::=")
_NOT_STRUCTURE = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')


def _max_nesting(text: str) -> int:
    """Deepest ( nesting outside "literals", [classes] and # comments."""
    depth = deepest = 0
    for paren in re.findall(r"[()]", _NOT_STRUCTURE.sub("", text)):
        depth += 1 if paren == "(" else -1
        deepest = max(deepest, depth)
    return deepest


def check_gbnf_text(gbnf: str) -> None:
    """Refuse what llama.cpp cannot take safely, naming the problem (InvalidArgument)."""
    if len(gbnf.encode("utf-8", errors="replace")) > MAX_GRAMMAR_BYTES:
        raise errors.InvalidArgument(f"grammar longer than {MAX_GRAMMAR_BYTES} bytes")
    if "\0" in gbnf:
        raise errors.InvalidArgument("grammar contains a NUL character")
    rules = set(_RULE_DEF.findall(gbnf))
    if "root" not in rules:
        raise errors.InvalidArgument("grammar has no 'root ::= ...' rule")
    if len(rules) > MAX_GRAMMAR_RULES:
        raise errors.InvalidArgument(f"grammar has more than {MAX_GRAMMAR_RULES} rules")
    if _max_nesting(gbnf) > MAX_GRAMMAR_NESTING:
        raise errors.InvalidArgument(f"grammar nests deeper than {MAX_GRAMMAR_NESTING} levels")


def grammar_source(params: SamplingParams) -> str | None:
    """The GBNF text the params ask for, or None."""
    if params.grammar and params.json_schema:
        raise errors.InvalidArgument("give either grammar or json_schema, not both")
    if params.json_schema:
        return schema_to_gbnf(params.json_schema)
    return params.grammar or None


def trigger_regexes(params: SamplingParams) -> list[re.Pattern[bytes]]:
    """Compiled lazy-grammar triggers: the words (escaped, one alternation) and patterns."""
    patterns = list(params.grammar_trigger_patterns)
    words = [w for w in params.grammar_trigger_words if w]
    if words:
        patterns.append("(" + "|".join(re.escape(w) for w in words) + ")")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern.encode("utf-8")))
        except (re.error, UnicodeEncodeError) as exc:
            raise errors.InvalidArgument(f"bad grammar trigger pattern {pattern!r}: {exc}") from exc
    return compiled


def trigger_start(pattern: re.Pattern[bytes], text: bytes) -> int:
    """Where constrained output starts if ``pattern`` fires on ``text``, else -1."""
    source = pattern.pattern
    full = source.startswith(b"^") and source.endswith(b"$")
    match = (pattern.fullmatch(text) if full else None) or pattern.search(text)
    if match is None:
        return -1
    for group in range(1, pattern.groups + 1):
        start, end = match.span(group)
        if end > start >= 0:
            return start
    return match.start()
