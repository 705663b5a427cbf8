"""Cross-field rules: what one setting does to another once each target has its winner.

grammar vs json_schema, reverse-prompt appended to stop, queue thresholds following queue_size,
and the orderings checked on the finished Config (thresholds <= queue_size, n_ubatch <= n_batch,
n_batch >= n_seq_max for generating graphs: see limits.py for the llama.cpp asserts behind them).
"""
from __future__ import annotations

from typing import Any

from .. import errors
from .models import Config, SamplingParams, StoppingParams
from .walk import Cand


def _named(winners: dict[str, Cand], target: str, value: Any) -> str:
    cand = winners.get(target)
    given = f", given as {cand.path}" if cand is not None and cand.path != target else ""
    return f"{target} ({value}{given})"


def finish_sampling(updates: dict[str, Any], winners: dict[str, Cand], base: SamplingParams,
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


def finish_stopping(updates: dict[str, Any], base: StoppingParams) -> None:
    reverse = updates.pop("reverse_prompt", "")
    if reverse:
        stop = updates.get("stop", base.stop)
        updates["stop"] = stop if reverse in stop else (*stop, reverse)


def finish_backend(updates: dict[str, Any]) -> None:
    if "queue_size" in updates:       # thresholds not given follow the new queue size
        size = updates["queue_size"]
        updates.setdefault("queue_reject_threshold", size)
        updates.setdefault("queue_warning_threshold",
                           min(size * 4 // 5, updates["queue_reject_threshold"]))


def cross_checks(cfg: Config, winners: dict[str, Cand]) -> None:
    b, m = cfg.backend, cfg.model
    pairs = [("backend.queue_warning_threshold", b.queue_warning_threshold,
              "backend.queue_reject_threshold", b.queue_reject_threshold),
             ("backend.queue_reject_threshold", b.queue_reject_threshold,
              "backend.queue_size", b.queue_size)]
    if m.n_ubatch is not None:
        pairs.append(("model.n_ubatch", m.n_ubatch, "model.n_batch", m.n_batch))
    problems = [f"{_named(winners, lo, lo_v)} must be <= {_named(winners, hi, hi_v)}"
                for lo, lo_v, hi, hi_v in pairs if lo_v > hi_v]
    if not m.embedding and m.n_batch < m.n_seq_max:
        # llama.cpp reserves an output row per sequence in every batch and asserts it fits
        # n_batch (GGML_ASSERT in output_reserve: the process dies). Embedding graphs get
        # fewer sequences instead (engine/contexts.py). Table: limits.py.
        problems.append(f"{_named(winners, 'model.n_batch', m.n_batch)} must be >= "
                        f"{_named(winners, 'model.n_seq_max', m.n_seq_max)}: llama.cpp "
                        "reserves one output row per sequence in every batch")
    if problems:
        raise errors.InvalidArgument("invalid configuration: " + "; ".join(problems))
