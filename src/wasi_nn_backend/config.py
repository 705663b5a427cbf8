"""Configuration: pydantic v2 models, the ONE canonical form of every setting.

CONTRACT (other modules rely on these names; the parser maps every accepted spelling onto them):

    Config
      backend:     BackendSettings
      model:       ModelSettings
      sampling:    SamplingParams
      stopping:    StoppingParams
      memory:      MemoryConfig
      logging:     LoggingConfig
      performance: PerformanceConfig

    RequestParams  (what one generation request runs with)
      sampling: SamplingParams, stopping: StoppingParams, priority: str, timeout_ms: int | None
      timeout_ms: deadline in ms counted from submission; None = the backend's
      default_task_timeout_ms; 0 = no deadline.

Public functions (below the models):

    parse_config(source, *, base=None) -> (Config, warnings)
    parse_overrides(source, *, base: RequestParams) -> (RequestParams, warnings)
    request_params(config) -> RequestParams
    dump_config(model) -> dict     (canonical nested JSON-able dict; parse_config reads it back)

``source`` is None, str, bytes (UTF-8) or a dict. None, "" and whitespace = no settings. A UTF-8
BOM and trailing NUL bytes (C callers that count the terminator) are dropped before parsing.

Spellings. Every setting has one canonical place (section.field above). Also accepted:

  * nested sections: backend, model, sampling, stopping, memory, logging, performance, plus the
    original's ``memory_policy`` (same keys as memory) and root ``logit_bias``;
  * legacy flat keys at the root: any field of backend, model, sampling, stopping, with the
    aliases below (the original read these when no section was given);
  * WasmEdge kebab-case keys at the root (wasi_nn_abi.md 2.2), table ``_KEBAB`` below;
  * a ``{"runtime": {...}}`` wrapper, read like the root (the original's docs use it).

Aliases (alias -> canonical):
    ctx_size -> model.n_ctx        batch_size -> model.n_batch       ubatch_size -> model.n_ubatch
    n_parallel -> model.n_seq_max  n_threads(_batch) -> model.threads(_batch)
    n_predict, model.max_tokens, model.n_predict -> stopping.max_tokens
    temp -> temperature   repeat_last_n -> penalty_last_n   logprobs -> n_probs   typ_p -> typical_p
    stop_sequences -> stopping.stop     stopping.ignore_eos -> sampling.ignore_eos
    max_inference_time_ms, timeout_config.max_inference_time_ms -> stopping.max_time_ms
    grammar_triggers.{patterns,words,tokens} -> sampling.grammar_trigger_{patterns,words,tokens}
    auto_cleanup_enabled, auto_cleanup_sessions -> backend.auto_cleanup
    cache_prompt -> memory.enable_token_cache_reuse    n_keep / n_discard -> memory.n_*_tokens
    root enable_debug -> logging.enable_debug
    performance.batch_size -> performance.batch_size AND model.n_batch (weakest spelling of n_batch)
  Kebab: ctx-size, batch-size, ubatch-size, threads-batch, n-gpu-layers, n-predict (<0 -> -1),
    reverse-prompt (appended to stopping.stop), top-p, top-k, min-p, typ-p, xtc-*, *-penalty,
    last-n-penalty, dry-* (dry-multipier sic too), mirostat-eta/-tau, dynatemp-*, min-keep, n-probs,
    ignore-eos, json-schema (string or object), n-keep -> memory.n_keep_tokens, ctx-shift ->
    memory.context_shifting, n-parallel / n-sequences -> model.n_seq_max, use-mmap, flash-attn
    (on/off/auto or bool), cache-type-k/-v, kv-unified, chat-template, grammar-lazy, and the
    llama.cpp spellings top-n-sigma, repeat-last-n, mirostat-lr/-ent, dry-sequence-breakers;
    enable-log (true -> level info, false -> level error), enable-debug-log ->
    logging.enable_debug. WasmEdge keys with no
    meaning here (mmproj, tts, port, rope-*, yarn-*, ...) give a warning. Hyphen-free WasmEdge
    keys (temp, threads, seed, grammar, mirostat) are the same strings as legacy flat keys and
    count as flat.

Precedence, when several spellings name one setting (the same in every function):
  1. nested section key  >  kebab-case root key  >  legacy flat root key  >  performance.batch_size
     (for model.n_batch only);
  2. then a key inside the ``runtime`` wrapper > the same kind of key outside it;
  3. then a key in the setting's own section > one in another section (stopping.max_tokens over
     model.n_predict, sampling.ignore_eos over stopping.ignore_eos, sampling.logit_bias over root
     logit_bias), and ``memory`` over ``memory_policy``;
  4. then the canonical name > an alias (temperature over temp, n_ctx over ctx_size, n_batch over
     batch_size, max_tokens over n_predict), whatever their order in the JSON;
  5. then fixed preferences among aliases: dry-multiplier > dry-multipier, n-parallel > n-sequences,
     max_inference_time_ms > timeout_config, auto_cleanup_enabled > auto_cleanup_sessions.
  A spelling that loses with a different value gives a warning. Settings not mentioned keep
  ``base``'s value (or the default).

Validation: every value given is checked, even one that loses. A known key with a wrong type or
out of range raises errors.InvalidArgument naming the JSON path, the value and what is allowed
(all such problems at once). Types are strict: true is not 1, 1 is not true, 1.0 is not an int; an
int is fine for a float. Unknown keys give warnings (returned, and logged on
``wasi_nn_backend.config``). Malformed JSON, bad UTF-8 or a document that is not an object raise
errors.InvalidEncoding. Nothing is half-applied: on an error nothing is returned.

Cross-field rules: queue_warning_threshold <= queue_reject_threshold <= queue_size (when
queue_size is given and a threshold is not, reject = queue_size and warning = 80 % of it);
n_ubatch <= n_batch; grammar and json_schema are exclusive (both in one document is an error;
setting one clears the other from ``base``). top_k -1 is read as 0 (off); level names are
case-insensitive and "warning" = "warn", "critical" = "fatal".

parse_config reads only Config settings; priority and timeout_ms there give a warning.
parse_overrides reads only sampling, stopping, priority and timeout_ms; load-time keys there
(ctx-size, n_gpu_layers, backend.*, ...) give a warning and are not validated.
"""
from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import errors


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class BackendSettings(_Frozen):
    max_sessions: int = Field(100, ge=1, le=1_000_000)
    idle_timeout_ms: int = Field(300_000, ge=1, le=7 * 24 * 3600 * 1000)
    auto_cleanup: bool = True
    max_concurrent: int = Field(10, ge=1, le=4096)
    queue_size: int = Field(500, ge=1, le=1_000_000)
    default_task_timeout_ms: int = Field(30_000, ge=0, le=24 * 3600 * 1000)  # 0 = no timeout
    priority_scheduling_enabled: bool = True
    fair_scheduling_enabled: bool = True
    auto_queue_cleanup: bool = True
    queue_warning_threshold: int = Field(400, ge=0, le=1_000_000)
    queue_reject_threshold: int = Field(500, ge=1, le=1_000_000)


class ModelSettings(_Frozen):
    n_ctx: int = Field(2048, ge=16, le=1 << 20)          # context per session (tokens)
    n_batch: int = Field(512, ge=1, le=1 << 16)           # most tokens in one decode
    n_ubatch: int | None = Field(None, ge=1, le=1 << 16)  # None = n_batch
    n_seq_max: int = Field(8, ge=1, le=256)               # KV sequence slots
    threads: int | None = Field(None, ge=1, le=1024)      # None = os.cpu_count()
    threads_batch: int | None = Field(None, ge=1, le=1024)
    n_gpu_layers: int = Field(0, ge=-1, le=100_000)
    use_mmap: bool = True
    flash_attn: Literal["auto", "on", "off"] = "auto"
    kv_unified: bool = True
    cache_type_k: Literal["f32", "f16", "q8_0", "q4_0"] = "f16"
    cache_type_v: Literal["f32", "f16", "q8_0", "q4_0"] = "f16"
    chat_template: str | None = None                      # overrides the GGUF's template
    deterministic: bool = False


class SamplingParams(_Frozen):
    temperature: float = Field(0.8, ge=0.0, le=100.0)     # <= 0 = greedy
    top_k: int = Field(40, ge=0, le=1 << 31)              # 0 = off
    top_p: float = Field(0.95, ge=0.0, le=1.0)            # 1 = off
    min_p: float = Field(0.05, ge=0.0, le=1.0)            # 0 = off
    typical_p: float = Field(1.0, ge=0.0, le=1.0)         # 1 = off
    top_n_sigma: float = Field(-1.0, ge=-1.0, le=100.0)   # < 0 = off
    repeat_penalty: float = Field(1.0, ge=0.0, le=100.0)  # 1 = off
    presence_penalty: float = Field(0.0, ge=-100.0, le=100.0)
    frequency_penalty: float = Field(0.0, ge=-100.0, le=100.0)
    penalty_last_n: int = Field(64, ge=-1, le=1 << 24)    # -1 = context size, 0 = off
    dry_multiplier: float = Field(0.0, ge=0.0, le=100.0)  # 0 = off
    dry_base: float = Field(1.75, ge=1.0, le=100.0)
    dry_allowed_length: int = Field(2, ge=0, le=1 << 16)
    dry_penalty_last_n: int = Field(-1, ge=-1, le=1 << 24)
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", "\"", "*")
    dynatemp_range: float = Field(0.0, ge=0.0, le=100.0)
    dynatemp_exponent: float = Field(1.0, ge=0.0, le=100.0)
    mirostat: Literal[0, 1, 2] = 0
    mirostat_tau: float = Field(5.0, ge=0.0, le=100.0)
    mirostat_eta: float = Field(0.1, ge=0.0, le=1.0)
    xtc_probability: float = Field(0.0, ge=0.0, le=1.0)
    xtc_threshold: float = Field(0.1, ge=0.0, le=1.0)
    min_keep: int = Field(1, ge=0, le=1 << 16)
    seed: int = Field(-1, ge=-1, le=0xFFFFFFFF)          # -1 = random
    n_probs: int = Field(0, ge=0, le=1024)
    ignore_eos: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()        # (token id, bias); -inf allowed
    grammar: str = ""                                      # GBNF; "" = none
    grammar_lazy: bool = False
    grammar_trigger_words: tuple[str, ...] = ()
    grammar_trigger_patterns: tuple[str, ...] = ()        # regexes (llama.cpp lazy patterns)
    grammar_trigger_tokens: tuple[int, ...] = ()
    json_schema: str = ""                                  # JSON text; converted to a grammar


class StoppingParams(_Frozen):
    max_tokens: int = Field(512, ge=-1, le=1 << 24)       # -1 = until context/EOG; 0 = none
    stop: tuple[str, ...] = ()                             # stop strings (never in the output)
    max_time_ms: int = Field(0, ge=0, le=24 * 3600 * 1000)  # 0 = no limit


class MemoryConfig(_Frozen):
    context_shifting: bool = True
    cache_strategy: Literal["lru", "fifo", "smart"] = "lru"
    max_cache_tokens: int = Field(100_000, ge=1, le=1 << 31)
    memory_pressure_threshold: float = Field(0.8, ge=0.1, le=1.0)
    n_keep_tokens: int = Field(128, ge=0, le=1 << 20)
    n_discard_tokens: int = Field(0, ge=0, le=1 << 20)    # 0 = half of what is not kept
    enable_partial_cache_deletion: bool = True
    enable_token_cache_reuse: bool = True
    cache_deletion_strategy: Literal["lru", "fifo", "smart"] = "lru"
    max_memory_mb: int = Field(8192, ge=0, le=1 << 24)    # host RAM for swapped KV; 0 = none


class LoggingConfig(_Frozen):
    level: Literal["debug", "info", "warn", "error", "fatal", "none"] = "info"
    enable_debug: bool = False
    timestamps: bool = True
    colors: bool = False
    file: str | None = None


class PerformanceConfig(_Frozen):
    batch_processing: bool = True
    batch_size: int | None = Field(None, ge=1, le=1 << 16)


class Config(_Frozen):
    backend: BackendSettings = BackendSettings()
    model: ModelSettings = ModelSettings()
    sampling: SamplingParams = SamplingParams()
    stopping: StoppingParams = StoppingParams()
    memory: MemoryConfig = MemoryConfig()
    logging: LoggingConfig = LoggingConfig()
    performance: PerformanceConfig = PerformanceConfig()


Priority = Literal["low", "normal", "high", "urgent"]


class RequestParams(_Frozen):
    sampling: SamplingParams = SamplingParams()
    stopping: StoppingParams = StoppingParams()
    priority: Priority = "normal"
    timeout_ms: int | None = Field(None, ge=0, le=24 * 3600 * 1000)


# =============================================================================================
# Parsing. Tables first (which spelling goes where), then the walk, then the checks.
# =============================================================================================

_log = logging.getLogger("wasi_nn_backend.config")

_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "backend": BackendSettings, "model": ModelSettings, "sampling": SamplingParams,
    "stopping": StoppingParams, "memory": MemoryConfig, "logging": LoggingConfig,
    "performance": PerformanceConfig,
}
_CONFIG_SCOPE = frozenset(_SECTION_MODELS)
_REQUEST_SCOPE = frozenset({"sampling", "stopping", "request"})
_LV_FALLBACK, _LV_FLAT, _LV_KEBAB, _LV_NESTED = 0, 1, 2, 3   # spelling levels; higher wins
_SKIP = object()                                          # a converter's "offer nothing"


class _Bad(Exception):
    """One invalid value: where (below the key's path), what was given, what is allowed."""

    def __init__(self, value: Any, expected: str, subpath: str = "", kind: str = "wrong type"):
        super().__init__(expected)
        self.value, self.expected, self.subpath, self.kind = value, expected, subpath, kind


@dataclass(frozen=True)
class _Route:
    target: str                                   # "section.field", "request.x" or a virtual one
    convert: Callable[[Any], Any] | None = None   # spelling-specific conversion, before checks
    pref: int = 0                                 # fixed preference among aliases (rule 5)
    level: int | None = None                      # forced level (performance.batch_size)


@dataclass(frozen=True)
class _Ignored:
    reason: str


@dataclass(frozen=True)
class _Expand:
    fn: Callable[..., None]                       # fn(collector, value, path, ctx)


@dataclass(frozen=True)
class _Ctx:
    level: int
    wrapper: int        # 1 inside {"runtime": {...}}
    home: str | None    # section the key sits in; None = root key (counts as home), "" = never
    section_pref: int   # memory 1, memory_policy 0


@dataclass(frozen=True)
class _Cand:
    target: str
    value: Any
    path: str
    rank: tuple


# ---- value conversions ------------------------------------------------------------------------

def _n_predict_kebab(value: Any) -> Any:
    # WasmEdge: n-predict < 0 means "unlimited", which is our -1.
    if type(value) is int and value < 0:
        return -1
    return value


def _enable_log(value: Any) -> Any:
    if not isinstance(value, bool):
        raise _Bad(value, "true or false")
    return "info" if value else "error"


def _flash_attn(value: Any) -> Any:
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _not_none(value: Any) -> Any:
    return _SKIP if value is None else value


def _top_k(value: Any) -> Any:
    # llama.cpp and the original's docs use -1 for "off"; ours is 0.
    return 0 if type(value) is int and value == -1 else value


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
            raise _Bad(value, f"{_SCHEMA_EXPECTED} ({exc})", kind="invalid value") from None
    if not isinstance(value, str):
        raise _Bad(value, _SCHEMA_EXPECTED)
    if not value.strip():
        return ""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise _Bad(value, f"{_SCHEMA_EXPECTED} ({exc})", kind="invalid value") from None
    if not isinstance(parsed, (dict, bool)):
        raise _Bad(value, _SCHEMA_EXPECTED, kind="invalid value")
    return value


def _stop(value: Any) -> Any:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if item == "":
                raise _Bad(item, "a non-empty string", f"[{i}]", "invalid value")
        return tuple(value)
    return value


_BIAS_EXPECTED = ('a list of [token_id, bias] pairs or an object {"token_id": bias} '
                  "(bias a number, or false = never)")


def _logit_bias(value: Any) -> Any:
    if isinstance(value, Mapping):
        items = [(f"[{json.dumps(str(k))}]", k, b) for k, b in value.items()]
    elif isinstance(value, (list, tuple)):
        items = []
        for i, pair in enumerate(value):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise _Bad(pair, "a [token_id, bias] pair", f"[{i}]")
            items.append((f"[{i}]", pair[0], pair[1]))
    else:
        raise _Bad(value, _BIAS_EXPECTED)
    pairs = isinstance(value, (list, tuple))    # paths [i][0] / [i][1], or ["token"] for both
    return tuple((_bias_token(tok, sub + "[0]" * pairs), _bias_value(bias, sub + "[1]" * pairs))
                 for sub, tok, bias in items)


def _bias_token(token: Any, sub: str) -> int:
    if isinstance(token, str) and token.isascii() and token.isdigit():
        token = int(token)
    if type(token) is not int or not 0 <= token < 1 << 31:
        raise _Bad(token, "a token id (an integer in [0, 2147483647])", sub)
    return token


def _bias_value(bias: Any, sub: str) -> float:
    if bias is False:
        return -math.inf
    if isinstance(bias, bool) or not isinstance(bias, (int, float)):
        raise _Bad(bias, "a number, or false (= never)", sub)
    if math.isnan(bias) or bias == math.inf:
        raise _Bad(bias, "a finite number, or false (= never)", sub, "out of range")
    return float(bias)


# Applied to a target whatever spelling gave it.
_NORMALIZE: dict[str, Callable[[Any], Any]] = {
    "sampling.top_k": _top_k, "logging.level": _level, "model.flash_attn": _flash_attn,
    "sampling.json_schema": _json_schema, "sampling.logit_bias": _logit_bias,
    "stopping.stop": _stop,
}

# ---- expanders for the original's sub-objects ------------------------------------------------

def _sub_object(col: "_Collector", value: Any, path: str, routes: dict[str, str],
                ignored: tuple[str, ...], ctx: _Ctx) -> None:
    """Read {"enabled": bool, key: value, ...}; enabled=false drops the whole object."""
    if not col.is_object(value, path):
        return
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        col.bad(f"{path}.enabled", _Bad(enabled, "true or false"))
        return
    for key, item in value.items():
        if key == "enabled":
            continue
        if key in routes and enabled:
            col.offer(_Route(routes[key]), key, item, f"{path}.{key}", ctx)
        elif key in ignored:
            col.warn(f"{path}.{key}: has no effect in this backend; ignored")
        elif key not in routes:
            col.unknown(f"{path}.{key}", key, list(routes) + list(ignored) + ["enabled"])


def _grammar_triggers(col: "_Collector", value: Any, path: str, ctx: _Ctx) -> None:
    routes = {"patterns": "sampling.grammar_trigger_patterns",
              "words": "sampling.grammar_trigger_words",
              "tokens": "sampling.grammar_trigger_tokens"}
    _sub_object(col, value, path, routes, (), ctx)


def _timeout_config(col: "_Collector", value: Any, path: str, ctx: _Ctx) -> None:
    _sub_object(col, value, path, {"max_inference_time_ms": "stopping.max_time_ms"},
                ("adaptive_timeout", "min_timeout_ms", "timeout_multiplier"), ctx)


# ---- the spelling tables ---------------------------------------------------------------------

_NO_EFFECT = _Ignored("has no effect in this backend")
_Entry = tuple[_Route, ...] | _Ignored | _Expand


def _canonical_table(section: str) -> dict[str, _Entry]:
    return {name: (_Route(f"{section}.{name}"),) for name in _SECTION_MODELS[section].model_fields}


def _r(target: str, **kw: Any) -> tuple[_Route, ...]:
    return (_Route(target, **kw),)


_SECTIONS: dict[str, dict[str, _Entry]] = {s: _canonical_table(s) for s in _SECTION_MODELS}
_SECTIONS["backend"].update(
    auto_cleanup_enabled=_r("backend.auto_cleanup", pref=1),
    auto_cleanup_sessions=_r("backend.auto_cleanup"))
_SECTIONS["model"].update(
    ctx_size=_r("model.n_ctx"), batch_size=_r("model.n_batch"), ubatch_size=_r("model.n_ubatch"),
    n_parallel=_r("model.n_seq_max"), n_threads=_r("model.threads"),
    n_threads_batch=_r("model.threads_batch"),
    n_predict=_r("stopping.max_tokens"), max_tokens=_r("stopping.max_tokens"),
    path=_Ignored("the model file is the one load_by_name names"),
    name=_NO_EFFECT, description=_NO_EFFECT, use_mlock=_NO_EFFECT, numa=_NO_EFFECT,
    main_gpu=_NO_EFFECT, tensor_split=_NO_EFFECT, split_mode=_NO_EFFECT)
_SECTIONS["sampling"].update(
    temp=_r("sampling.temperature"), repeat_last_n=_r("sampling.penalty_last_n"),
    logprobs=_r("sampling.n_probs"), typ_p=_r("sampling.typical_p"),
    grammar_triggers=_Expand(_grammar_triggers))
_SECTIONS["stopping"].update(
    stop_sequences=_r("stopping.stop"), n_predict=_r("stopping.max_tokens"),
    ignore_eos=_r("sampling.ignore_eos"),
    max_inference_time_ms=_r("stopping.max_time_ms", pref=1),
    timeout_config=_Expand(_timeout_config), grammar_triggers=_Expand(_grammar_triggers),
    semantic_stopping=_NO_EFFECT, token_filters=_NO_EFFECT)
_SECTIONS["memory"].update(
    cache_prompt=_r("memory.enable_token_cache_reuse"), n_keep=_r("memory.n_keep_tokens"),
    n_discard=_r("memory.n_discard_tokens"))
_SECTIONS["memory_policy"] = _SECTIONS["memory"]
_SECTIONS["performance"].update(
    batch_size=(_Route("performance.batch_size"),
                _Route("model.n_batch", convert=_not_none, level=_LV_FALLBACK)),
    batch_timeout_ms=_NO_EFFECT)


def _flat_table() -> dict[str, _Entry]:
    table: dict[str, _Entry] = {}
    for section in ("backend", "model", "sampling", "stopping"):
        for key, entry in _SECTIONS[section].items():
            table.setdefault(key, entry)     # shared keys (ignore_eos, n_predict) agree
    table.update(
        enable_debug=_r("logging.enable_debug"), cache_prompt=_r("memory.enable_token_cache_reuse"),
        priority=_r("request.priority"), timeout_ms=_r("request.timeout_ms"),
        batch_timeout_ms=_NO_EFFECT)
    return table


_FLAT_KEYS = _flat_table()
_ROOT_NESTED: dict[str, _Entry] = {"logit_bias": _r("sampling.logit_bias")}

_KEBAB: dict[str, _Entry] = {
    "ctx-size": _r("model.n_ctx"), "batch-size": _r("model.n_batch"),
    "ubatch-size": _r("model.n_ubatch"), "threads-batch": _r("model.threads_batch"),
    "n-gpu-layers": _r("model.n_gpu_layers"), "use-mmap": _r("model.use_mmap"),
    "flash-attn": _r("model.flash_attn"), "cache-type-k": _r("model.cache_type_k"),
    "cache-type-v": _r("model.cache_type_v"), "kv-unified": _r("model.kv_unified"),
    "chat-template": _r("model.chat_template"),
    "n-parallel": _r("model.n_seq_max", pref=1), "n-sequences": _r("model.n_seq_max"),
    "n-predict": _r("stopping.max_tokens", convert=_n_predict_kebab),
    "reverse-prompt": _r("stopping.reverse_prompt"),
    "top-p": _r("sampling.top_p"), "top-k": _r("sampling.top_k"), "min-p": _r("sampling.min_p"),
    "typ-p": _r("sampling.typical_p"), "top-n-sigma": _r("sampling.top_n_sigma", pref=1),
    "top-nsigma": _r("sampling.top_n_sigma"),
    "xtc-probability": _r("sampling.xtc_probability"),
    "xtc-threshold": _r("sampling.xtc_threshold"),
    "repeat-penalty": _r("sampling.repeat_penalty"),
    "presence-penalty": _r("sampling.presence_penalty"),
    "frequency-penalty": _r("sampling.frequency_penalty"),
    "last-n-penalty": _r("sampling.penalty_last_n"), "repeat-last-n": _r("sampling.penalty_last_n"),
    "dry-multiplier": _r("sampling.dry_multiplier", pref=1),
    "dry-multipier": _r("sampling.dry_multiplier"),          # sic, WasmEdge's spelling
    "dry-base": _r("sampling.dry_base"), "dry-allowed-length": _r("sampling.dry_allowed_length"),
    "dry-last-n-penalty": _r("sampling.dry_penalty_last_n"),
    "dry-sequence-breakers": _r("sampling.dry_sequence_breakers"),
    "mirostat-eta": _r("sampling.mirostat_eta", pref=1), "mirostat-lr": _r("sampling.mirostat_eta"),
    "mirostat-tau": _r("sampling.mirostat_tau", pref=1),
    "mirostat-ent": _r("sampling.mirostat_tau"),
    "dynatemp-range": _r("sampling.dynatemp_range"),
    "dynatemp-exponent": _r("sampling.dynatemp_exponent"),
    "min-keep": _r("sampling.min_keep"), "n-probs": _r("sampling.n_probs"),
    "ignore-eos": _r("sampling.ignore_eos"), "json-schema": _r("sampling.json_schema"),
    "grammar-lazy": _r("sampling.grammar_lazy"),
    "n-keep": _r("memory.n_keep_tokens"), "ctx-shift": _r("memory.context_shifting"),
    "enable-log": _r("logging.level", convert=_enable_log),
    "enable-debug-log": _r("logging.enable_debug"),
}
_WASMEDGE_NO_EFFECT = frozenset("""
    stream-stdout verbosity main-gpu tensor-split split-mode use-mlock cpu-moe n-cpu-moe
    check-tensors numa mmproj model-alias model-url hf-repo hf-file hf-token rope-freq-base
    rope-freq-scale rope-scaling-type pooling-type attention-type no-kv-offload warmup embedding
    reranking embd-normalize n-prev image always-regenerate-image-embd tts model-vocoder
    tts-output-file tts-speaker-file port hostname cont-batching n-cache-reuse""".split())


def _wasmedge_no_effect(key: str) -> bool:
    return (key in _WASMEDGE_NO_EFFECT or key.startswith(("yarn-", "slot-"))
            or key.endswith("-speculative"))


# ---- field checks: one strict pydantic adapter per canonical target --------------------------

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
            return _BIAS_EXPECTED
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
    for section, model in _SECTION_MODELS.items():
        for name, info in model.model_fields.items():
            table[f"{section}.{name}"] = _make_field(info.annotation, info.metadata)
    for name in ("priority", "timeout_ms"):
        info = RequestParams.model_fields[name]
        table[f"request.{name}"] = _make_field(info.annotation, info.metadata)
    table["stopping.reverse_prompt"] = _make_field(str, [])    # virtual: appended to stop
    return table


_FIELDS = _field_table()
_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def _is_int_literal(annotation: Any) -> bool:
    return get_origin(annotation) is Literal and all(type(a) is int for a in get_args(annotation))


def _check(target: str, value: Any) -> Any:
    """The canonical value of ``value`` for ``target``, or _Bad."""
    field = _FIELDS[target]
    if target in _NORMALIZE:
        value = _NORMALIZE[target](value)
    annotation = field.annotation
    if get_origin(annotation) is Literal and isinstance(value, str):
        value = value.lower()
    if get_origin(annotation) is tuple and isinstance(value, list):
        value = tuple(value)
    if _is_int_literal(annotation) and type(value) is not int:
        raise _Bad(value, field.expected)      # pydantic lets true and 1.0 pass as Literal[1]
    try:
        return field.adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        subpath = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
        expected = field.expected
        if subpath and get_origin(annotation) is tuple:
            expected = _describe(get_args(annotation)[0], [])
        kind = ("out of range" if first["type"] in _RANGE_ERRORS
                else "not an allowed value" if first["type"] == "literal_error" else "wrong type")
        raise _Bad(first["input"], expected, subpath, kind) from None


def _text(value: Any) -> str:
    """``value`` as the JSON it came from (80 characters at most)."""
    if isinstance(value, float) and math.isinf(value):
        text = "-inf" if value < 0 else "inf"
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    return ("null" if value is None else "a boolean" if isinstance(value, bool)
            else "an integer" if isinstance(value, int) else "a number" if isinstance(value, float)
            else "a string" if isinstance(value, str) else "an object" if isinstance(value, Mapping)
            else "an array" if isinstance(value, (list, tuple)) else type(value).__name__)


# ---- the walk ----------------------------------------------------------------------------------

_ROOT_KEYS = sorted({*_SECTIONS, *_FLAT_KEYS, *_KEBAB, *_ROOT_NESTED, "runtime"})


def _home(section: str) -> str:
    return "memory" if section == "memory_policy" else section


class _Collector:
    """Walks one document: every spelling found becomes a checked candidate for its target."""

    def __init__(self, scope: frozenset[str]):
        self.scope = scope
        self.cands: dict[str, list[_Cand]] = {}
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def bad(self, path: str, bad: _Bad) -> None:
        self.errors.append(f"{path}{bad.subpath}: {bad.kind}: got {_text(bad.value)} "
                           f"({_kind(bad.value)}); expected {bad.expected}")

    def unknown(self, path: str, key: str, known: list[str]) -> None:
        close = (difflib.get_close_matches(key, known, n=1, cutoff=0.8)
                 if isinstance(key, str) else [])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.warn(f"{path}: unknown key; ignored{hint}")

    def is_object(self, value: Any, path: str) -> bool:
        if isinstance(value, Mapping):
            return True
        self.bad(path, _Bad(value, "an object"))
        return False

    def root(self, doc: Mapping, prefix: str = "", wrapper: int = 0) -> None:
        for key, value in doc.items():
            path = f"{prefix}{key}"
            if key == "runtime" and not wrapper:
                if self.is_object(value, path):
                    self.root(value, f"{path}.", wrapper=1)
            elif key in _SECTIONS:
                if isinstance(value, Mapping):
                    self.section(key, value, path, wrapper)
                elif _home(key) in self.scope:
                    self.bad(path, _Bad(value, "an object"))
                else:      # a section this call does not read: its shape does not matter
                    self.warn(f"{path}: {_OUT_OF_SCOPE[False]}; ignored")
            elif key in _ROOT_NESTED:     # nested level, but not logit_bias's home section
                self.entry(_ROOT_NESTED[key], key, value, path, _Ctx(_LV_NESTED, wrapper, "", 1))
            elif key in _KEBAB:
                self.entry(_KEBAB[key], key, value, path, _Ctx(_LV_KEBAB, wrapper, None, 1))
            elif key in _FLAT_KEYS:
                self.entry(_FLAT_KEYS[key], key, value, path, _Ctx(_LV_FLAT, wrapper, None, 1))
            elif isinstance(key, str) and _wasmedge_no_effect(key):
                self.warn(f"{path}: WasmEdge key with no effect in this backend; ignored")
            else:
                self.unknown(path, key, _ROOT_KEYS)

    def section(self, name: str, obj: Mapping, path: str, wrapper: int) -> None:
        table = _SECTIONS[name]
        ctx = _Ctx(_LV_NESTED, wrapper, _home(name), 0 if name == "memory_policy" else 1)
        for key, value in obj.items():
            if key in table:
                self.entry(table[key], key, value, f"{path}.{key}", ctx)
            else:
                self.unknown(f"{path}.{key}", key, list(table))

    def entry(self, entry: _Entry, key: str, value: Any, path: str, ctx: _Ctx) -> None:
        if isinstance(entry, _Ignored):
            self.warn(f"{path}: {entry.reason}; ignored")
        elif isinstance(entry, _Expand):
            entry.fn(self, value, path, ctx)
        else:
            for route in entry:
                self.offer(route, key, value, path, ctx)

    def offer(self, route: _Route, key: str, value: Any, path: str, ctx: _Ctx) -> None:
        section, field = route.target.split(".")
        if section not in self.scope:
            if route.level is None:     # a fallback route is never worth a second warning
                self.warn(f"{path}: {_OUT_OF_SCOPE[section == 'request']}; ignored")
            return
        try:
            if route.convert is not None:
                value = route.convert(value)
            if value is _SKIP:
                return
            value = _check(route.target, value)
        except _Bad as bad:
            self.bad(path, bad)
            return
        level = ctx.level if route.level is None else route.level
        home = ctx.home is None or ctx.home == section
        rank = (level, ctx.wrapper, home, ctx.section_pref, key == field, route.pref)
        self.cands.setdefault(route.target, []).append(_Cand(route.target, value, path, rank))

    def winners(self) -> dict[str, _Cand]:
        """Rules 1-5 of the module docstring; any exact tie goes to the first in document order."""
        chosen = {}
        for target, cands in self.cands.items():
            best = max(cands, key=lambda c: c.rank)
            chosen[target] = best
            for cand in cands:     # a fallback spelling losing is expected: no warning
                if cand is not best and cand.value != best.value and cand.rank[0] != _LV_FALLBACK:
                    self.warn(f"{cand.path}: {_text(cand.value)} ignored: {best.path} "
                              f"({_text(best.value)}) takes precedence")
        return chosen


_OUT_OF_SCOPE = {
    False: "a load-time setting; it has no effect on a single request",
    True: "a per-request setting (runtime config or set_input metadata); it has no effect "
          "in a backend or model configuration",
}


_LABEL = {_CONFIG_SCOPE: "configuration", _REQUEST_SCOPE: "request parameters"}


# ---- documents ------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_document(source: Any, label: str) -> tuple[Mapping, list[str]]:
    """The JSON object ``source`` holds, and warnings about duplicate keys."""
    if source is None:
        return {}, []
    if isinstance(source, Mapping):
        return source, []
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

    def pairs(items: list[tuple[str, Any]]) -> dict:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(f"{key}: duplicate key in one JSON object; "
                                  "the last value is used")
            seen[key] = value
        return seen

    try:
        doc = json.loads(text, parse_constant=_no_constant, object_pairs_hook=pairs)
    except RecursionError:
        raise errors.InvalidEncoding(f"{label} is not usable JSON: nested too deeply") from None
    except ValueError as exc:
        raise errors.InvalidEncoding(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidEncoding(
            f"{label} must be a JSON object, got {_kind(doc)}")
    return doc, duplicates


def _collect(source: Any, scope: frozenset[str]) -> tuple[dict[str, _Cand], list[str]]:
    label = _LABEL[scope]
    doc, warnings = _load_document(source, label)
    col = _Collector(scope)
    col.warnings.extend(warnings)
    bad_keys = [k for k in doc if not isinstance(k, str)]
    if bad_keys:
        raise errors.InvalidArgument(f"{label} keys must be strings, got {bad_keys[0]!r}")
    col.root(doc)
    if col.errors:
        raise errors.InvalidArgument(f"invalid {label}: " + "; ".join(col.errors))
    return col.winners(), col.warnings


# ---- building the result --------------------------------------------------------------------

def _named(winners: dict[str, _Cand], target: str, value: Any) -> str:
    cand = winners.get(target)
    given = f", given as {cand.path}" if cand is not None and cand.path != target else ""
    return f"{target} ({value}{given})"


def _finish_sampling(updates: dict[str, Any], winners: dict[str, _Cand], base: SamplingParams,
                     warnings: list[str]) -> None:
    grammar, schema = winners.get("sampling.grammar"), winners.get("sampling.json_schema")
    if grammar and schema and grammar.value and schema.value:
        raise errors.InvalidArgument(
            f"{grammar.path} and {schema.path} are exclusive: give one of them")
    if schema and schema.value and not grammar:
        updates["grammar"] = ""           # the newer constraint replaces base's
    if grammar and grammar.value and not schema:
        updates["json_schema"] = ""
    trigger_keys = ("grammar_trigger_words", "grammar_trigger_patterns", "grammar_trigger_tokens")
    given = [winners[f"sampling.{k}"].path for k in trigger_keys
             if f"sampling.{k}" in winners and winners[f"sampling.{k}"].value]
    has_grammar = (updates.get("grammar", base.grammar)
                   or updates.get("json_schema", base.json_schema))
    if given and not has_grammar:
        warnings.append(f"{', '.join(given)}: grammar triggers only start a lazy grammar; with no "
                        "sampling.grammar or json_schema they have no effect")


def _finish_stopping(updates: dict[str, Any], winners: dict[str, _Cand],
                     base: StoppingParams) -> None:
    reverse = updates.pop("reverse_prompt", "")
    if reverse:
        stop = updates.get("stop", base.stop)
        updates["stop"] = stop if reverse in stop else (*stop, reverse)


def _finish_backend(updates: dict[str, Any], base: BackendSettings) -> None:
    if "queue_size" in updates:       # thresholds not given follow the new queue size
        size = updates["queue_size"]
        updates.setdefault("queue_reject_threshold", size)
        updates.setdefault("queue_warning_threshold",
                           min(size * 4 // 5, updates["queue_reject_threshold"]))


def _rebuild(base: BaseModel, updates: dict[str, Any]) -> BaseModel:
    return type(base).model_validate({**dict(base), **updates}) if updates else base


def _cross_checks(cfg: Config, winners: dict[str, _Cand]) -> None:
    b, m = cfg.backend, cfg.model
    pairs = [("backend.queue_warning_threshold", b.queue_warning_threshold,
              "backend.queue_reject_threshold", b.queue_reject_threshold),
             ("backend.queue_reject_threshold", b.queue_reject_threshold,
              "backend.queue_size", b.queue_size)]
    if m.n_ubatch is not None:
        pairs.append(("model.n_ubatch", m.n_ubatch, "model.n_batch", m.n_batch))
    problems = [f"{_named(winners, lo, lo_v)} must be <= {_named(winners, hi, hi_v)}"
                for lo, lo_v, hi, hi_v in pairs if lo_v > hi_v]
    if problems:
        raise errors.InvalidArgument("invalid configuration: " + "; ".join(problems))


def _updates(winners: dict[str, _Cand], sections: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    updates: dict[str, dict[str, Any]] = {s: {} for s in sections}
    for target, cand in winners.items():
        section, field = target.split(".")
        if section in updates:
            updates[section][field] = cand.value
    return updates


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
    winners, warnings = _collect(source, _CONFIG_SCOPE)
    updates = _updates(winners, tuple(_SECTION_MODELS))
    _finish_sampling(updates["sampling"], winners, base.sampling, warnings)
    _finish_stopping(updates["stopping"], winners, base.stopping)
    _finish_backend(updates["backend"], base.backend)
    try:
        cfg = Config(**{s: _rebuild(getattr(base, s), u) for s, u in updates.items()})
    except ValidationError as exc:      # not expected: every value was checked on its own
        raise errors.InvalidArgument(f"invalid configuration: {exc}") from None
    _cross_checks(cfg, winners)
    return cfg, _emit(warnings)


def parse_overrides(source: Any, *, base: RequestParams) -> tuple[RequestParams, list[str]]:
    """A new RequestParams: ``base`` with the sampling / stopping / priority / timeout_ms keys of
    ``source`` applied (``base`` itself is immutable and never changes), and the warnings."""
    winners, warnings = _collect(source, _REQUEST_SCOPE)
    updates = _updates(winners, ("sampling", "stopping", "request"))
    _finish_sampling(updates["sampling"], winners, base.sampling, warnings)
    _finish_stopping(updates["stopping"], winners, base.stopping)
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
