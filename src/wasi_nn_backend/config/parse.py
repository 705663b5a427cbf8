"""The public functions: read a document (JSON text, bytes or a dict) into a Config or
RequestParams, and write one back out (see the package docstring for the rules)."""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from .. import errors
from .models import SECTION_MODELS, Config, RequestParams, SamplingParams, StoppingParams
from .rules import cross_checks, finish_backend, finish_sampling, finish_stopping
from .values import kind_of
from .walk import Cand, Collector

# The package's name, not this module's: callers filter on "wasi_nn_backend.config".
_log = logging.getLogger("wasi_nn_backend.config")

# Which sections each function reads, in a fixed order; "request" holds priority and timeout_ms.
_CONFIG_SCOPE = tuple(SECTION_MODELS)
_REQUEST_SCOPE = ("sampling", "stopping", "request")
_LABEL = {_CONFIG_SCOPE: "configuration", _REQUEST_SCOPE: "request parameters"}

# Every channel (backend init, model load, runtime overrides, set_input metadata) reads one
# document; these bound what one costs. A real configuration has a few dozen keys and a few KB;
# the byte limit leaves room for a long grammar, JSON schema or logit_bias list.
MAX_DOCUMENT_BYTES = 4 << 20
MAX_DOCUMENT_KEYS = 4096


# ---- documents ------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_document(source: Any, label: str) -> tuple[Mapping, list[str]]:
    """The JSON object ``source`` holds, and warnings about duplicate keys."""
    if source is None:
        return {}, []
    if isinstance(source, Mapping):
        _check_keys(source, label)
        return source, []
    if isinstance(source, (bytes, bytearray, memoryview, str)) and len(source) > MAX_DOCUMENT_BYTES:
        raise errors.TooLarge(f"{label} is {len(source):,} bytes; the limit is "
                              f"{MAX_DOCUMENT_BYTES:,}", needed=len(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            text = bytes(source).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.InvalidEncoding(f"{label} is not valid UTF-8: {exc}") from None
    elif isinstance(source, str):
        text = source
    else:
        raise errors.InvalidArgument(
            f"{label} must be JSON text (str or bytes) or a dict, got {type(source).__name__}")
    text = text.lstrip("\ufeff").rstrip("\x00")
    if not text.strip():
        return {}, []
    duplicates: list[str] = []
    keys = 0

    def pairs(items: list[tuple[str, Any]]) -> dict:
        nonlocal keys
        keys += len(items)
        if keys > MAX_DOCUMENT_KEYS:
            raise _TooManyKeys
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(f"{key}: duplicate key in one JSON object; "
                                  "the last value is used")
            seen[key] = value
        return seen

    try:
        doc = json.loads(text, parse_constant=_no_constant, object_pairs_hook=pairs)
    except _TooManyKeys:
        raise errors.TooLarge(f"{label} has more than {MAX_DOCUMENT_KEYS} keys") from None
    except RecursionError:
        raise errors.InvalidEncoding(f"{label} is not usable JSON: nested too deeply") from None
    except ValueError as exc:
        raise errors.InvalidEncoding(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidEncoding(
            f"{label} must be a JSON object, got {kind_of(doc)}")
    return doc, duplicates


class _TooManyKeys(Exception):
    pass


def _check_keys(doc: Mapping, label: str) -> None:
    """TooLarge for a dict (a Python caller's document) with more keys than a JSON one may
    have; counting stops at the limit, so a huge dict costs no more than the limit."""
    budget, todo = MAX_DOCUMENT_KEYS, [doc]
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            budget -= len(item)
            todo.extend(v for v in item.values() if isinstance(v, (Mapping, list, tuple)))
        elif len(item) <= MAX_DOCUMENT_KEYS:
            todo.extend(v for v in item if isinstance(v, (Mapping, list, tuple)))
        if budget < 0:
            raise errors.TooLarge(f"{label} has more than {MAX_DOCUMENT_KEYS} keys")


def _collect(source: Any, scope: tuple[str, ...]) -> tuple[dict[str, Cand], list[str]]:
    label = _LABEL[scope]
    doc, warnings = _load_document(source, label)
    col = Collector(scope)
    col.warnings.extend(warnings)
    bad_keys = [k for k in doc if not isinstance(k, str)]
    if bad_keys:
        raise errors.InvalidArgument(f"{label} keys must be strings, got {bad_keys[0]!r}")
    col.root(doc)
    col.finish()
    if col.errors:
        raise errors.InvalidArgument(f"invalid {label}: " + "; ".join(col.errors))
    return col.winners(), col.warnings


def _read(source: Any, scope: tuple[str, ...], sampling: SamplingParams,
          stopping: StoppingParams) -> tuple[dict[str, Cand], dict[str, dict[str, Any]], list[str]]:
    """The winners of ``source``, their values as field updates per section of ``scope`` (the
    sampling and stopping rules applied over ``sampling`` / ``stopping``), and the warnings."""
    winners, warnings = _collect(source, scope)
    updates: dict[str, dict[str, Any]] = {s: {} for s in scope}
    for target, cand in winners.items():
        section, field = target.split(".")
        if section in updates:
            updates[section][field] = cand.value
    finish_sampling(updates["sampling"], winners, sampling, warnings)
    finish_stopping(updates["stopping"], stopping)
    return winners, updates, warnings


def _rebuild(base: BaseModel, updates: dict[str, Any]) -> BaseModel:
    return type(base).model_validate({**dict(base), **updates}) if updates else base


def _emit(warnings: list[str]) -> list[str]:
    for text in warnings:
        _log.warning("%s", text)
    return warnings


# ---- public ---------------------------------------------------------------------------------

def parse_config(source: Any, *, base: Config | None = None) -> tuple[Config, list[str]]:
    """The Config ``source`` describes over ``base`` (or the defaults), and its warnings.

    Raises errors.InvalidEncoding (not JSON / not UTF-8 / not an object) or
    errors.InvalidArgument (a known key with a bad value, a cross-field rule broken)."""
    base = base if base is not None else Config()
    winners, updates, warnings = _read(source, _CONFIG_SCOPE, base.sampling, base.stopping)
    finish_backend(updates["backend"])
    try:
        cfg = Config(**{s: _rebuild(getattr(base, s), u) for s, u in updates.items()})
    except ValidationError as exc:      # not expected: every value was checked on its own
        raise errors.InvalidArgument(f"invalid configuration: {exc}") from None
    cross_checks(cfg, winners)
    return cfg, _emit(warnings)


def parse_overrides(source: Any, *, base: RequestParams) -> tuple[RequestParams, list[str]]:
    """A new RequestParams: ``base`` with the sampling / stopping / priority / timeout_ms keys of
    ``source`` applied (``base`` itself is immutable and never changes), and the warnings."""
    _, updates, warnings = _read(source, _REQUEST_SCOPE, base.sampling, base.stopping)
    try:
        params = RequestParams(sampling=_rebuild(base.sampling, updates["sampling"]),
                               stopping=_rebuild(base.stopping, updates["stopping"]),
                               priority=updates["request"].get("priority", base.priority),
                               timeout_ms=updates["request"].get("timeout_ms", base.timeout_ms))
    except ValidationError as exc:
        raise errors.InvalidArgument(f"invalid request parameters: {exc}") from None
    return params, _emit(warnings)


def request_params(config: Config) -> RequestParams:
    """The params a request runs with when it gives no overrides: the config's sampling and
    stopping, normal priority, timeout_ms None (= backend.default_task_timeout_ms)."""
    return RequestParams(sampling=config.sampling, stopping=config.stopping, priority="normal",
                         timeout_ms=None)


def dump_config(config: BaseModel) -> dict:
    """``config`` (a Config, RequestParams or one section) as a nested JSON-able dict in the
    canonical spelling; parse_config / parse_overrides read it back to the same object."""
    return _jsonable(config.model_dump())


def _jsonable(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v, k) for k, v in value.items()}
    if key == "logit_bias":               # JSON has no -inf: the input convention is false
        return [[tok, False if bias == -math.inf else bias] for tok, bias in value]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
