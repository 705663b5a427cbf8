"""Field checks: one strict pydantic adapter per canonical target ("section.field").

Every value a document gives is checked here on its own, even one that later loses to another
spelling, so that a bad value is always reported, with the JSON path and what is allowed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import ConfigDict, TypeAdapter, ValidationError

from .models import SECTION_MODELS, RequestParams
from .values import BIAS_EXPECTED, NORMALIZE, Bad


@dataclass(frozen=True)
class _Field:
    adapter: TypeAdapter
    annotation: Any
    expected: str


def _range(metadata: list) -> str:
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    return f" in [{low}, {high}]" if low is not None and high is not None else ""


def _describe(annotation: Any, metadata: list) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is tuple:
        inner = args[0]
        if get_origin(inner) is tuple:
            return BIAS_EXPECTED
        return {str: "a list of strings", int: "a list of integers"}.get(inner, "a list")
    if type(None) in args:
        return _describe(next(a for a in args if a is not type(None)), metadata) + " or null"
    base = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return base.get(annotation, str(annotation)) + _range(metadata)


def _make_field(annotation: Any, metadata: list) -> _Field:
    typ = Annotated[tuple([annotation, *metadata])] if metadata else annotation
    adapter = TypeAdapter(typ, config=ConfigDict(strict=True))
    return _Field(adapter, annotation, _describe(annotation, metadata))


def _field_table() -> dict[str, _Field]:
    table = {}
    for section, model in SECTION_MODELS.items():
        for name, info in model.model_fields.items():
            table[f"{section}.{name}"] = _make_field(info.annotation, info.metadata)
    for name in ("priority", "timeout_ms"):
        info = RequestParams.model_fields[name]
        table[f"request.{name}"] = _make_field(info.annotation, info.metadata)
    table["stopping.reverse_prompt"] = _make_field(str, [])    # virtual: appended to stop
    return table


_FIELDS = _field_table()

# Lists a request may give, bounded by what they cost per token on the engine thread (stop
# strings and grammar triggers are checked against the text after every token, for every
# session the engine runs): (most items, most characters per string item).
LIST_LIMITS: dict[str, tuple[int, int | None]] = {
    "stopping.stop": (32, 256),
    "stopping.reverse_prompt": (1, 256),
    "sampling.dry_sequence_breakers": (64, 256),
    "sampling.grammar_trigger_words": (64, 256),
    "sampling.grammar_trigger_patterns": (64, 1024),
    "sampling.grammar_trigger_tokens": (1024, None),
    "sampling.logit_bias": (1 << 18, None),
}


def _check_list(target: str, value: Any) -> None:
    most, longest = LIST_LIMITS[target]
    items = (value,) if isinstance(value, str) else value
    if len(items) > most:
        raise Bad(list(items), f"at most {most} items, got {len(items)}", "", "too long")
    if longest is not None:
        for index, item in enumerate(items):
            if isinstance(item, str) and len(item) > longest:
                subpath = "" if isinstance(value, str) else f"[{index}]"
                raise Bad(item, f"at most {longest} characters", subpath, "too long")
_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def _is_int_literal(annotation: Any) -> bool:
    return get_origin(annotation) is Literal and all(type(a) is int for a in get_args(annotation))


def check(target: str, value: Any) -> Any:
    """The canonical value of ``value`` for ``target``, or Bad."""
    field = _FIELDS[target]
    if target in NORMALIZE:
        value = NORMALIZE[target](value)
    annotation = field.annotation
    if get_origin(annotation) is Literal and isinstance(value, str):
        value = value.lower()
    if get_origin(annotation) is tuple and isinstance(value, list):
        value = tuple(value)
    if _is_int_literal(annotation) and type(value) is not int:
        raise Bad(value, field.expected)      # pydantic lets true and 1.0 pass as Literal[1]
    try:
        checked = field.adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        subpath = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
        expected = field.expected
        if subpath and get_origin(annotation) is tuple:
            expected = _describe(get_args(annotation)[0], [])
        kind = ("out of range" if first["type"] in _RANGE_ERRORS
                else "not an allowed value" if first["type"] == "literal_error" else "wrong type")
        raise Bad(first["input"], expected, subpath, kind) from None
    if target in LIST_LIMITS:
        _check_list(target, checked)
    return checked
