"""Value conversions: how one spelling's value becomes the canonical value, before the checks.

Also how a bad value is reported (``Bad``) and shown in messages (``shown``, ``kind_of``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

SKIP = object()                                          # a converter's "offer nothing"


class Bad(Exception):
    """One invalid value: where (below the key's path), what was given, what is allowed."""

    def __init__(self, value: Any, expected: str, subpath: str = "", kind: str = "wrong type"):
        super().__init__(expected)
        self.value, self.expected, self.subpath, self.kind = value, expected, subpath, kind


# ---- conversions tied to one spelling (keys.py names them on the route) -----------------------

def n_predict_kebab(value: Any) -> Any:
    # WasmEdge: n-predict < 0 means "unlimited", which is our -1.
    if type(value) is int and value < 0:
        return -1
    return value


def enable_log(value: Any) -> Any:
    if not isinstance(value, bool):
        raise Bad(value, "true or false")
    return "info" if value else "error"


def not_none(value: Any) -> Any:
    return SKIP if value is None else value


_RESPONSE_FORMAT = ('{"type": "json_object"} (any JSON object), {"type": "json_object", '
                    '"schema": {...}}, {"type": "json_schema", "json_schema": {"schema": {...}}} '
                    'or {"type": "text"}')


def response_format(value: Any) -> Any:
    """llama-cpp-python's / llama-server's (OpenAI's) response_format -> a json_schema value."""
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise Bad(value, _RESPONSE_FORMAT)
    kind = value["type"]
    if kind == "text":
        return ""
    if kind == "json_object":
        return value.get("schema", {"type": "object"})
    if kind == "json_schema":
        inner = value.get("json_schema")
        if isinstance(inner, Mapping) and "schema" in inner:
            return inner["schema"]
        if "schema" in value:
            return value["schema"]
        raise Bad(value, _RESPONSE_FORMAT, ".json_schema.schema", "invalid value")
    raise Bad(kind, _RESPONSE_FORMAT, ".type", "invalid value")


# ---- conversions applied to a target whatever spelling gave it (NORMALIZE) -------------------

def _flash_attn(value: Any) -> Any:
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _top_k(value: Any) -> Any:
    # llama.cpp and the original's docs use -1 for "off"; ours is 0.
    return 0 if type(value) is int and value == -1 else value


# llama.cpp's llama_pooling_type numbers (WasmEdge's pooling-type takes these).
_POOLING_NUMBERS = {-1: None, 0: "none", 1: "mean", 2: "cls", 3: "last"}
_POOLING_RANK = 4


def _pooling(value: Any) -> Any:
    if type(value) is int:
        if value == _POOLING_RANK:
            raise Bad(value, "mean, cls, last or none: rank pooling (reranking) is not "
                      "supported", kind="not an allowed value")
        if value in _POOLING_NUMBERS:
            return _POOLING_NUMBERS[value]
        raise Bad(value, "one of -1 (the model's), 0 none, 1 mean, 2 cls, 3 last",
                  kind="out of range")
    return value.lower() if isinstance(value, str) else value


def _normalize(value: Any) -> Any:
    # true / false as well as llama.cpp's embd_normalize numbers.
    if isinstance(value, bool):
        return 2 if value else -1
    return value


def _level(value: Any) -> Any:
    if isinstance(value, str):
        return {"warning": "warn", "critical": "fatal"}.get(value.lower(), value.lower())
    return value


_SCHEMA_EXPECTED = "a JSON schema: an object, or JSON text holding one"


def _json_schema(value: Any) -> Any:
    if isinstance(value, (Mapping, bool)):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:      # a Python object that is not JSON
            raise Bad(value, f"{_SCHEMA_EXPECTED} ({exc})", kind="invalid value") from None
    if not isinstance(value, str):
        raise Bad(value, _SCHEMA_EXPECTED)
    if not value.strip():
        return ""
    try:
        parsed = json.loads(value)
    except RecursionError:
        raise Bad(value[:40] + "...", f"{_SCHEMA_EXPECTED} (nested too deeply)",
                  kind="invalid value") from None
    except ValueError as exc:
        raise Bad(value, f"{_SCHEMA_EXPECTED} ({exc})", kind="invalid value") from None
    if not isinstance(parsed, (dict, bool)):
        raise Bad(value, _SCHEMA_EXPECTED, kind="invalid value")
    return value


def _stop(value: Any) -> Any:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if item == "":
                raise Bad(item, "a non-empty string", f"[{i}]", "invalid value")
        return tuple(value)
    return value


BIAS_EXPECTED = ('a list of [token_id, bias] pairs or an object {"token_id": bias} '
                 "(bias a number, or false = never)")


def _logit_bias(value: Any) -> Any:
    if isinstance(value, Mapping):
        items = [(f"[{json.dumps(str(k))}]", k, b) for k, b in value.items()]
    elif isinstance(value, (list, tuple)):
        items = []
        for i, pair in enumerate(value):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise Bad(pair, "a [token_id, bias] pair", f"[{i}]")
            items.append((f"[{i}]", pair[0], pair[1]))
    else:
        raise Bad(value, BIAS_EXPECTED)
    pairs = isinstance(value, (list, tuple))    # paths [i][0] / [i][1], or ["token"] for both
    return tuple((_bias_token(tok, sub + "[0]" * pairs), _bias_value(bias, sub + "[1]" * pairs))
                 for sub, tok, bias in items)


def _bias_token(token: Any, sub: str) -> int:
    if isinstance(token, str) and token.isascii() and token.isdigit():
        token = int(token)
    if type(token) is not int or not 0 <= token < 1 << 31:
        raise Bad(token, "a token id (an integer in [0, 2147483647])", sub)
    return token


def _bias_value(bias: Any, sub: str) -> float:
    if bias is False:
        return -math.inf
    if isinstance(bias, bool) or not isinstance(bias, (int, float)):
        raise Bad(bias, "a number, or false (= never)", sub)
    if math.isnan(bias) or bias == math.inf:
        raise Bad(bias, "a finite number, or false (= never)", sub, "out of range")
    return float(bias)


# Applied to a target whatever spelling gave it.
NORMALIZE: dict[str, Callable[[Any], Any]] = {
    "sampling.top_k": _top_k, "logging.level": _level, "model.flash_attn": _flash_attn,
    "sampling.json_schema": _json_schema, "sampling.logit_bias": _logit_bias,
    "stopping.stop": _stop, "model.pooling": _pooling, "model.normalize": _normalize,
}


# ---- values in messages ----------------------------------------------------------------------

def shown(value: Any) -> str:
    """``value`` as the JSON it came from (80 characters at most)."""
    if isinstance(value, float) and math.isinf(value):
        text = "-inf" if value < 0 else "inf"
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def kind_of(value: Any) -> str:
    return ("null" if value is None else "a boolean" if isinstance(value, bool)
            else "an integer" if isinstance(value, int) else "a number" if isinstance(value, float)
            else "a string" if isinstance(value, str) else "an object" if isinstance(value, Mapping)
            else "an array" if isinstance(value, (list, tuple)) else type(value).__name__)
