"""Configuration: pydantic v2 models, the ONE canonical form of every setting.

Modules: models (the pydantic models), parse (the public functions, reading JSON), keys (which
spelling goes where), values (per-spelling conversions), checks (strict per-field validation),
walk (collecting every spelling of a document and ranking them), rules (cross-field rules),
limits (llama.cpp's limits, and the table of checks that keep settings from its asserts).

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

Public functions (parse.py):

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
  * WasmEdge kebab-case keys at the root (wasi_nn_abi.md 2.2), table ``KEBAB`` in keys.py;
  * a ``{"runtime": {...}}`` wrapper, read like the root (the original's docs use it).

Aliases (alias -> canonical):
    ctx_size -> model.n_ctx        batch_size -> model.n_batch       ubatch_size -> model.n_ubatch
    n_parallel -> model.n_seq_max  n_threads(_batch) -> model.threads(_batch)
    n_predict, model.max_tokens, model.n_predict -> stopping.max_tokens
    temp -> temperature   repeat_last_n -> penalty_last_n   logprobs -> n_probs   typ_p -> typical_p
    stop_sequences -> stopping.stop     stopping.ignore_eos -> sampling.ignore_eos
    max_inference_time_ms, timeout_config.max_inference_time_ms -> stopping.max_time_ms
    grammar_triggers.{patterns,words,tokens} -> sampling.grammar_trigger_{patterns,words,tokens}
    response_format ({"type": "json_object" | "json_schema" | "text", ...}) -> sampling.json_schema
    auto_cleanup_enabled, auto_cleanup_sessions -> backend.auto_cleanup
    cache_prompt -> memory.enable_token_cache_reuse    n_keep / n_discard -> memory.n_*_tokens
    root enable_debug -> logging.enable_debug
    embeddings -> model.embedding   pooling_type -> model.pooling   embd_normalize -> model.normalize
    performance.batch_size -> performance.batch_size AND model.n_batch (weakest spelling of n_batch)
  Kebab: ctx-size, batch-size, ubatch-size, threads-batch, n-gpu-layers, n-predict (<0 -> -1),
    reverse-prompt (appended to stopping.stop), top-p, top-k, min-p, typ-p, xtc-*, *-penalty,
    last-n-penalty, dry-* (dry-multipier sic too), mirostat-eta/-tau, dynatemp-*, min-keep, n-probs,
    ignore-eos, json-schema (string or object), n-keep -> memory.n_keep_tokens, ctx-shift ->
    memory.context_shifting, n-parallel / n-sequences -> model.n_seq_max, use-mmap, flash-attn
    (on/off/auto or bool), cache-type-k/-v, kv-unified, chat-template, grammar-lazy, and the
    llama.cpp spellings top-n-sigma, repeat-last-n, mirostat-lr/-ent, dry-sequence-breakers;
    enable-log (true -> level info, false -> level error), enable-debug-log ->
    logging.enable_debug, pooling-type (llama.cpp's numbers: -1 the model's, 0 none, 1 mean,
    2 cls, 3 last; 4 rank is refused) -> model.pooling, embd-normalize -> model.normalize;
    embedding is a flat key (model.embedding). WasmEdge keys with no
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
n_ubatch <= n_batch; n_batch >= n_seq_max unless embedding (limits.py: the llama.cpp asserts behind
the ranges and rules); grammar and json_schema are exclusive (both in one document is an error;
setting one clears the other from ``base``). top_k -1 is read as 0 (off); level names are
case-insensitive and "warning" = "warn", "critical" = "fatal"; model.normalize true = 2 (L2),
false = -1 (none).

parse_config reads only Config settings; priority and timeout_ms there give a warning.
parse_overrides reads only sampling, stopping, priority and timeout_ms; load-time keys there
(ctx-size, n_gpu_layers, backend.*, ...) give a warning and are not validated.
"""
from .models import (MAX_TIMEOUT_MS, BackendSettings, Config, LoggingConfig, MemoryConfig,
                     ModelSettings, PerformanceConfig, Priority, RequestParams, SamplingParams,
                     StoppingParams)
from .parse import dump_config, parse_config, parse_overrides, request_params

__all__ = [
    "MAX_TIMEOUT_MS", "BackendSettings", "Config", "LoggingConfig", "MemoryConfig", "ModelSettings",
    "PerformanceConfig", "Priority", "RequestParams", "SamplingParams", "StoppingParams",
    "dump_config", "parse_config", "parse_overrides", "request_params",
]
