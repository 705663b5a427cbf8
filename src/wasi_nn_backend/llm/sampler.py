"""Sampler: one llama.cpp sampler chain built from SamplingParams, owned by one sequence.

Chain order (as llama.cpp's common sampler): logit_bias, grammar, penalties, DRY, top_n_sigma,
top_k, typical, top_p, min_p, XTC, temperature (dynatemp), dist(seed); greedy when
temperature <= 0; mirostat 1/2 replace everything after penalties with temp + mirostat.

Without a grammar, sampling is one llama_sampler_sample call. With one, the grammar is not in
the chain (see grammar.py): logits are copied into a candidate array, logit_bias and the
guarded grammar are applied, then the rest of the chain, and the chosen token is checked
against the grammar before anything accepts it.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import math
from collections.abc import Iterable

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors
from ..config import SamplingParams
from .context import Context
from .grammar import TOKEN_DATA, GrammarGuard, GrammarRejected, grammar_source, trigger_regexes
from .model import Model

log = logging.getLogger(__name__)

__all__ = ["Sampler", "GrammarRejected", "check_grammar"]

# "+inf" bias means "force": a finite huge value keeps softmax/dist well-defined (inf - inf
# is NaN there), and still dominates any real logit after any temperature >= 1e-9.
_FORCE_BIAS = 1e20
_DRY_BREAKER_MAX_BYTES = 40  # llama.cpp truncates longer breakers, maybe mid-character


def _seed(seed: int) -> int:
    return C.LLAMA_DEFAULT_SEED if seed < 0 else seed


def _make_guard(model: Model, params: SamplingParams) -> GrammarGuard | None:
    source = grammar_source(params)
    if source is None:
        return None
    lazy = params.grammar_lazy
    triggers = trigger_regexes(params) if lazy else []
    tokens = tuple(int(t) for t in params.grammar_trigger_tokens) if lazy else ()
    for token in tokens:
        if not model.valid_token(token):
            raise errors.InvalidArgument(f"grammar trigger token {token} is not in the vocabulary")
    if lazy and not triggers and not tokens:
        raise errors.InvalidArgument("grammar_lazy needs trigger words, patterns or tokens")
    return GrammarGuard(model, source, lazy=lazy, triggers=triggers, trigger_tokens=tokens)


def check_grammar(model: Model, params: SamplingParams) -> None:
    """Raise InvalidArgument now for a bad grammar/schema/trigger (builds and frees one)."""
    guard = _make_guard(model, params)
    if guard is not None:
        guard.close()


def _bias_entries(model: Model, params: SamplingParams) -> list[tuple[int, float]]:
    entries = []
    for token, bias in params.logit_bias:
        if not model.valid_token(token):
            raise errors.InvalidArgument(f"logit_bias token {token} is not in the vocabulary")
        if math.isnan(bias):
            raise errors.InvalidArgument(f"logit_bias for token {token} is NaN")
        entries.append((int(token), _FORCE_BIAS if bias == math.inf else float(bias)))
    if params.ignore_eos:
        entries += [(token, -math.inf) for token in model.eog_tokens()]
    return entries


def _new_chain() -> ctypes.c_void_p:
    chain_params = C.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    return C.llama_sampler_chain_init(chain_params)


def _add(chain: ctypes.c_void_p, sampler: ctypes.c_void_p | None, what: str) -> None:
    if not sampler:
        raise errors.BackendRuntimeError(f"llama.cpp could not create the {what} sampler")
    C.llama_sampler_chain_add(chain, sampler)  # the chain owns it from here on


def _add_bias(chain: ctypes.c_void_p, model: Model, entries: list[tuple[int, float]]) -> None:
    if entries:
        array = (C.llama_logit_bias * len(entries))(*[C.llama_logit_bias(t, b) for t, b in entries])
        _add(chain, C.llama_sampler_init_logit_bias(model.n_vocab, len(entries), array),
             "logit_bias")


def _dry_breakers(breakers: Iterable[str]) -> list[bytes]:
    result = []
    for breaker in breakers:
        data = breaker.replace("\0", "").encode("utf-8")[:_DRY_BREAKER_MAX_BYTES]
        data = data.decode("utf-8", errors="ignore").encode("utf-8")  # whole characters only
        if data:
            result.append(data)
    return result


def _add_history(chain: ctypes.c_void_p, model: Model, p: SamplingParams, n_ctx: int) -> bool:
    """Penalties and DRY: the samplers that remember tokens. True if any was added."""
    added = False
    last_n = n_ctx if p.penalty_last_n < 0 else min(p.penalty_last_n, n_ctx)
    if p.repeat_penalty <= 0:
        raise errors.InvalidArgument("repeat_penalty must be > 0 (1 = off)")
    if last_n and (p.repeat_penalty != 1 or p.frequency_penalty or p.presence_penalty):
        _add(chain, C.llama_sampler_init_penalties(model.n_vocab, last_n, p.repeat_penalty,
                                                   p.frequency_penalty, p.presence_penalty),
             "penalties")
        added = True
    dry_last_n = n_ctx if p.dry_penalty_last_n < 0 else min(p.dry_penalty_last_n, n_ctx)
    if p.dry_multiplier > 0 and dry_last_n:
        breakers = _dry_breakers(p.dry_sequence_breakers)
        array = (ctypes.c_char_p * max(1, len(breakers)))(*breakers)
        _add(chain, C.llama_sampler_init_dry(model.vocab_handle, p.dry_multiplier, p.dry_base,
                                             p.dry_allowed_length, dry_last_n, array,
                                             len(breakers)), "dry")
        added = True
    return added


def _add_selection(chain: ctypes.c_void_p, model: Model, p: SamplingParams) -> None:
    """Everything after the history samplers, ending with the sampler that picks a token."""
    seed = _seed(p.seed)
    if p.mirostat:
        _add(chain, C.llama_sampler_init_temp(p.temperature), "temperature")
        if p.mirostat == 1:
            _add(chain, C.llama_sampler_init_mirostat(model.n_vocab, seed, p.mirostat_tau,
                                                      p.mirostat_eta, 100), "mirostat")
        else:
            _add(chain, C.llama_sampler_init_mirostat_v2(seed, p.mirostat_tau, p.mirostat_eta),
                 "mirostat_v2")
        return
    if p.temperature <= 0:
        _add(chain, C.llama_sampler_init_greedy(), "greedy")
        return
    if p.top_n_sigma > 0:
        _add(chain, C.llama_sampler_init_top_n_sigma(p.top_n_sigma), "top_n_sigma")
    if p.top_k > 0:
        _add(chain, C.llama_sampler_init_top_k(min(p.top_k, model.n_vocab)), "top_k")
    if p.typical_p < 1:
        _add(chain, C.llama_sampler_init_typical(p.typical_p, p.min_keep), "typical")
    if p.top_p < 1:
        _add(chain, C.llama_sampler_init_top_p(p.top_p, p.min_keep), "top_p")
    if p.min_p > 0:
        _add(chain, C.llama_sampler_init_min_p(p.min_p, p.min_keep), "min_p")
    if p.xtc_probability > 0:
        _add(chain, C.llama_sampler_init_xtc(p.xtc_probability, p.xtc_threshold, p.min_keep,
                                             seed), "xtc")
    _add(chain, C.llama_sampler_init_temp_ext(p.temperature, p.dynatemp_range,
                                              p.dynatemp_exponent), "temperature")
    _add(chain, C.llama_sampler_init_dist(seed), "dist")


class Sampler:
    """Samples tokens for one sequence. Not thread-safe: one owner (the engine thread)."""

    def __init__(self, model: Model, params: SamplingParams, *, n_ctx: int) -> None:
        self._model = model
        self._pre = self._chain = self._grammar = None
        self._registered = False
        self._grammar = _make_guard(model, params)
        model.register_dependent(self)
        self._registered = True
        try:
            bias = _bias_entries(model, params)
            self._chain = _new_chain()
            if self._grammar is not None:
                # logit_bias must run before the grammar, so it gets a chain of its own.
                self._pre = _new_chain()
                _add_bias(self._pre, model, bias)
            else:
                _add_bias(self._chain, model, bias)
            self._has_history = _add_history(self._chain, model, params, max(1, n_ctx))
            self._history_n = max(n_ctx if n < 0 else n for n in
                                  (params.penalty_last_n, params.dry_penalty_last_n, 1))
            _add_selection(self._chain, model, params)
        except BaseException:
            self.close()
            raise
        self._n_vocab = model.n_vocab
        # Plain greedy (no grammar, no penalties/DRY, no mirostat): the chain would only add
        # logit_bias to the logits and take the first maximum, so numpy does exactly that,
        # without llama_sampler_sample building an n_vocab candidate array every token.
        self.fast_greedy = (self._grammar is None and params.temperature <= 0
                            and not params.mirostat and not self._has_history)
        self._bias: dict[int, list[np.float32]] = {}  # token -> its biases, added in order
        for token, value in bias:
            self._bias.setdefault(token, []).append(np.float32(value))
        self._ids = np.arange(self._n_vocab, dtype=np.int32)
        self._candidates = np.zeros(self._n_vocab, dtype=TOKEN_DATA) if self._grammar else None

    @property
    def has_grammar(self) -> bool:
        return self._grammar is not None

    def accept_prompt(self, tokens: Iterable[int]) -> None:
        """Feed prompt tokens to the history samplers (penalties, DRY) only; never to the
        grammar, which constrains the output alone."""
        chain = self._live()
        if not self._has_history:
            return
        tail = list(tokens)[-self._history_n:]  # the samplers keep only this many
        for token in tail:
            if self._model.valid_token(token):
                C.llama_sampler_accept(chain, int(token))

    def sample(self, ctx: Context, batch_index: int) -> int:
        """Pick the next token from the logits at ``batch_index`` and accept it."""
        if ctx.model is not self._model:
            # logit_bias/penalty tables are sized for this model's vocabulary.
            raise errors.InvalidArgument("sampler and context belong to different models")
        if self._chain is None:
            raise errors.BackendRuntimeError("sampler is closed")
        if self.fast_greedy:  # logits_view raises InvalidArgument for an index without logits
            return self._greedy(ctx.logits_view(batch_index))
        if not ctx.has_logits(batch_index):
            raise errors.InvalidArgument(
                f"batch index {batch_index} has no logits from the last decode")
        if self._grammar is None:
            return int(C.llama_sampler_sample(self._live(), ctx.handle, batch_index))
        return self._sample_guarded(ctx, batch_index)

    def _greedy(self, logits: np.ndarray) -> int:
        """The first maximum of logits + logit_bias (llama.cpp's greedy after its logit_bias
        sampler), without copying the row: only the biased tokens can change the answer."""
        best = int(logits.argmax())  # the method: np.argmax adds a Python-level dispatch
        if not self._bias:
            return best
        if best in self._bias:  # its own bias decides: do it the long way
            biased = logits.copy()
            for token, values in self._bias.items():
                for value in values:
                    biased[token] += value
            return int(np.argmax(biased))
        best_value = logits[best]
        for token, values in self._bias.items():
            value = logits[token]
            for bias in values:  # float32 adds in order, as C does
                value = np.float32(value + bias)
            if value > best_value or (value == best_value and token < best):
                best, best_value = token, value
        return best

    def _sample_guarded(self, ctx: Context, batch_index: int) -> int:
        chain, cands = self._live(), self._candidates
        cands["id"] = self._ids
        cands["logit"] = ctx.logits_view(batch_index)
        cands["p"] = 0.0
        array = C.llama_token_data_array(data=cands.ctypes.data_as(C.llama_token_data_p),
                                         size=self._n_vocab, selected=-1, sorted=False)
        C.llama_sampler_apply(self._pre, ctypes.byref(array))
        self._grammar.apply(array)
        allowed = cands["logit"].copy()  # still in id order: bias and grammar do not reorder
        if not np.isfinite(allowed).any():
            raise GrammarRejected("the grammar allows no token here",
                                  complete=self._grammar.is_complete())
        C.llama_sampler_apply(chain, ctypes.byref(array))
        selected = int(array.selected)
        token = int(cands["id"][selected]) if 0 <= selected < array.size else -1
        if token < 0 or not np.isfinite(allowed[token]):
            token = int(np.argmax(allowed))  # dist can land on a p=0 token when rnd == 0
        self._grammar.accept(token)
        C.llama_sampler_accept(self._pre, token)
        C.llama_sampler_accept(chain, token)
        return token

    def top_probs(self, ctx: Context, batch_index: int, n: int) -> list[tuple[int, float]]:
        """The n most likely tokens under the raw logits (softmax, before any sampler)."""
        logits = ctx.logits_view(batch_index).astype(np.float64)
        n = max(0, min(int(n), self._n_vocab))
        if n == 0:
            return []
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argpartition(-probs, n - 1)[:n]
        top = top[np.argsort(-probs[top], kind="stable")]
        return [(int(t), float(probs[t])) for t in top]

    def reset(self) -> None:
        """Forget history, grammar progress and mirostat state (the RNG is re-seeded too)."""
        C.llama_sampler_reset(self._live())
        if self._pre is not None:
            C.llama_sampler_reset(self._pre)
        if self._grammar is not None:
            self._grammar.reset()

    def _live(self) -> ctypes.c_void_p:
        if self._chain is None:
            raise errors.BackendRuntimeError("sampler is closed")
        return self._chain

    def close(self) -> None:
        """Idempotent. Frees the chains (which free their members) and the grammar."""
        for name in ("_chain", "_pre"):
            handle = getattr(self, name)
            setattr(self, name, None)
            if handle is not None:
                C.llama_sampler_free(handle)
        if self._grammar is not None:
            self._grammar.close()
        if self._registered:
            self._registered = False
            self._model.dependent_closed()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down C
            self.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
