"""The spelling tables: which key, where in a document, goes to which canonical target.

Nested sections (``SECTIONS``), legacy flat root keys (``FLAT_KEYS``), WasmEdge kebab-case root
keys (``KEBAB``), root keys read at the nested level (``ROOT_NESTED``) and the WasmEdge keys that
mean nothing here. The aliases and the precedence among them are listed in the package docstring.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .models import SECTION_MODELS
from .values import Bad, enable_log, n_predict_kebab, not_none, response_format

LV_FALLBACK, LV_FLAT, LV_KEBAB, LV_NESTED = 0, 1, 2, 3   # spelling levels; higher wins


@dataclass(frozen=True)
class Route:
    target: str                                   # "section.field", "request.x" or a virtual one
    convert: Callable[[Any], Any] | None = None   # spelling-specific conversion, before checks
    pref: int = 0                                 # fixed preference among aliases (rule 5)
    level: int | None = None                      # forced level (performance.batch_size)


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Expand:
    fn: Callable[[Sink, Any, str, Ctx], None]     # fn(collector, value, path, ctx)


@dataclass(frozen=True)
class Ctx:
    """Where a key sits, which decides its rank against other spellings of the same target."""
    level: int
    wrapper: int        # 1 inside {"runtime": {...}}
    home: str | None    # section the key sits in; None = root key (counts as home), "" = never
    section_pref: int   # memory 1, memory_policy 0


Entry = tuple[Route, ...] | Ignored | Expand


class Sink(Protocol):
    """What an expander may call on the collector walking the document (walk.Collector):
    named here so that the tables do not import the walk that reads them."""

    def warn(self, text: str) -> None: ...
    def bad(self, path: str, bad: Bad) -> None: ...
    def unknown(self, path: str, key: str, known: list[str]) -> None: ...
    def is_object(self, value: Any, path: str) -> bool: ...
    def offer(self, route: Route, key: str, value: Any, path: str, ctx: Ctx) -> None: ...


def home_section(section: str) -> str:
    return "memory" if section == "memory_policy" else section


# ---- expanders for the original's sub-objects ------------------------------------------------

def _sub_object(col: Sink, value: Any, path: str, routes: dict[str, str],
                ignored: tuple[str, ...], ctx: Ctx) -> None:
    """Read {"enabled": bool, key: value, ...}; enabled=false drops the whole object."""
    if not col.is_object(value, path):
        return
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        col.bad(f"{path}.enabled", Bad(enabled, "true or false"))
        return
    for key, item in value.items():
        if key == "enabled":
            continue
        if key in routes and enabled:
            col.offer(Route(routes[key]), key, item, f"{path}.{key}", ctx)
        elif key in ignored:
            col.warn(f"{path}.{key}: has no effect in this backend; ignored")
        elif key not in routes:
            col.unknown(f"{path}.{key}", key, list(routes) + list(ignored) + ["enabled"])


def _grammar_triggers(col: Sink, value: Any, path: str, ctx: Ctx) -> None:
    routes = {"patterns": "sampling.grammar_trigger_patterns",
              "words": "sampling.grammar_trigger_words",
              "tokens": "sampling.grammar_trigger_tokens"}
    _sub_object(col, value, path, routes, (), ctx)


def _host_flag(col: Sink, value: Any, path: str, ctx: Ctx) -> None:
    """A key the host running the backend reads itself (``stream-stdout``: the WebAssembly
    host prints each piece to the guest's stdout during compute): checked here, no setting."""
    if not isinstance(value, bool):
        col.bad(path, Bad(value, "true or false"))


def _timeout_config(col: Sink, value: Any, path: str, ctx: Ctx) -> None:
    _sub_object(col, value, path, {"max_inference_time_ms": "stopping.max_time_ms"},
                ("adaptive_timeout", "min_timeout_ms", "timeout_multiplier"), ctx)


# ---- the tables ------------------------------------------------------------------------------

_NO_EFFECT = Ignored("has no effect in this backend")


def _canonical_table(section: str) -> dict[str, Entry]:
    return {name: (Route(f"{section}.{name}"),) for name in SECTION_MODELS[section].model_fields}


def _r(target: str, **kw: Any) -> tuple[Route, ...]:
    return (Route(target, **kw),)


SECTIONS: dict[str, dict[str, Entry]] = {s: _canonical_table(s) for s in SECTION_MODELS}
SECTIONS["backend"].update(
    auto_cleanup_enabled=_r("backend.auto_cleanup", pref=1),
    auto_cleanup_sessions=_r("backend.auto_cleanup"))
SECTIONS["model"].update(
    ctx_size=_r("model.n_ctx"), batch_size=_r("model.n_batch"), ubatch_size=_r("model.n_ubatch"),
    n_parallel=_r("model.n_seq_max"), n_threads=_r("model.threads"),
    n_threads_batch=_r("model.threads_batch"),
    n_predict=_r("stopping.max_tokens"), max_tokens=_r("stopping.max_tokens"),
    embeddings=_r("model.embedding"), pooling_type=_r("model.pooling"),
    embd_normalize=_r("model.normalize"),
    path=Ignored("the model file is the one load_by_name names"),
    name=_NO_EFFECT, description=_NO_EFFECT, use_mlock=_NO_EFFECT, numa=_NO_EFFECT,
    main_gpu=_NO_EFFECT, tensor_split=_NO_EFFECT, split_mode=_NO_EFFECT)
SECTIONS["sampling"].update(
    temp=_r("sampling.temperature"), repeat_last_n=_r("sampling.penalty_last_n"),
    logprobs=_r("sampling.n_probs"), typ_p=_r("sampling.typical_p"),
    grammar_triggers=Expand(_grammar_triggers),
    response_format=_r("sampling.json_schema", convert=response_format))
SECTIONS["stopping"].update(
    stop_sequences=_r("stopping.stop"), n_predict=_r("stopping.max_tokens"),
    ignore_eos=_r("sampling.ignore_eos"),
    max_inference_time_ms=_r("stopping.max_time_ms", pref=1),
    timeout_config=Expand(_timeout_config), grammar_triggers=Expand(_grammar_triggers),
    semantic_stopping=_NO_EFFECT, token_filters=_NO_EFFECT)
SECTIONS["memory"].update(
    cache_prompt=_r("memory.enable_token_cache_reuse"), n_keep=_r("memory.n_keep_tokens"),
    n_discard=_r("memory.n_discard_tokens"))
SECTIONS["memory_policy"] = SECTIONS["memory"]
SECTIONS["performance"].update(
    batch_size=(Route("performance.batch_size"),
                Route("model.n_batch", convert=not_none, level=LV_FALLBACK)),
    batch_timeout_ms=_NO_EFFECT)


def _flat_table() -> dict[str, Entry]:
    table: dict[str, Entry] = {}
    for section in ("backend", "model", "sampling", "stopping"):
        for key, entry in SECTIONS[section].items():
            table.setdefault(key, entry)     # shared keys (ignore_eos, n_predict) agree
    table.update(
        enable_debug=_r("logging.enable_debug"), cache_prompt=_r("memory.enable_token_cache_reuse"),
        priority=_r("request.priority"), timeout_ms=_r("request.timeout_ms"),
        batch_timeout_ms=_NO_EFFECT)
    return table


FLAT_KEYS = _flat_table()
ROOT_NESTED: dict[str, Entry] = {"logit_bias": _r("sampling.logit_bias")}

KEBAB: dict[str, Entry] = {
    "ctx-size": _r("model.n_ctx"), "batch-size": _r("model.n_batch"),
    "ubatch-size": _r("model.n_ubatch"), "threads-batch": _r("model.threads_batch"),
    "n-gpu-layers": _r("model.n_gpu_layers"), "use-mmap": _r("model.use_mmap"),
    "flash-attn": _r("model.flash_attn"), "cache-type-k": _r("model.cache_type_k"),
    "cache-type-v": _r("model.cache_type_v"), "kv-unified": _r("model.kv_unified"),
    "chat-template": _r("model.chat_template"),
    "pooling-type": _r("model.pooling"), "embd-normalize": _r("model.normalize"),
    "n-parallel": _r("model.n_seq_max", pref=1), "n-sequences": _r("model.n_seq_max"),
    "n-predict": _r("stopping.max_tokens", convert=n_predict_kebab),
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
    "enable-log": _r("logging.level", convert=enable_log),
    "enable-debug-log": _r("logging.enable_debug"),
    "stream-stdout": Expand(_host_flag),     # read by adapters/wasm (outputs.py)
}
_WASMEDGE_NO_EFFECT = frozenset("""
    verbosity main-gpu tensor-split split-mode use-mlock cpu-moe n-cpu-moe
    check-tensors numa mmproj model-alias model-url hf-repo hf-file hf-token rope-freq-base
    rope-freq-scale rope-scaling-type attention-type no-kv-offload warmup reranking n-prev image
    always-regenerate-image-embd tts model-vocoder tts-output-file tts-speaker-file port hostname cont-batching n-cache-reuse""".split())


def wasmedge_no_effect(key: str) -> bool:
    return (key in _WASMEDGE_NO_EFFECT or key.startswith(("yarn-", "slot-"))
            or key.endswith("-speculative"))


# Every key a document's root may hold: the pool for "did you mean" hints.
ROOT_KEYS = sorted({*SECTIONS, *FLAT_KEYS, *KEBAB, *ROOT_NESTED, "runtime"})
