"""Filling a Sampler's llama.cpp sampler chains from SamplingParams (sampler.py owns and frees
the chains; every sampler added here belongs to its chain from then on).

Chain order (as llama.cpp's common sampler): logit_bias, grammar, penalties, DRY, top_n_sigma,
top_k, typical, top_p, min_p, XTC, temperature (dynatemp), dist(seed); greedy when
temperature <= 0; mirostat 1/2 replace everything after penalties with temp + mirostat. The
grammar is never in a chain (sampler.py, grammar.py).
"""
from __future__ import annotations

import ctypes
import math
from collections.abc import Iterable

import llama_cpp.llama_cpp as C

from .. import errors
from ..config import SamplingParams
from .model import Model

# "+inf" bias means "force": a finite huge value keeps softmax/dist well-defined (inf - inf
# is NaN there), and still dominates any real logit after any temperature >= 1e-9.
_FORCE_BIAS = 1e20
_DRY_BREAKER_MAX_BYTES = 40  # llama.cpp truncates longer breakers, maybe mid-character


def _seed(seed: int) -> int:
    return C.LLAMA_DEFAULT_SEED if seed < 0 else seed


def bias_entries(model: Model, params: SamplingParams) -> list[tuple[int, float]]:
    """The (token, bias) pairs of params.logit_bias, checked (+inf forces the token), then
    -inf on every end-of-generation token for ignore_eos."""
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


def _add(chain: ctypes.c_void_p, sampler: ctypes.c_void_p | None, what: str) -> None:
    if not sampler:
        raise errors.BackendRuntimeError(f"llama.cpp could not create the {what} sampler")
    C.llama_sampler_chain_add(chain, sampler)  # the chain owns it from here on


def add_bias(chain: ctypes.c_void_p, model: Model, entries: list[tuple[int, float]]) -> None:
    """A logit_bias sampler for ``entries`` (bias_entries), none when there are none."""
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


def _penalties_on(p: SamplingParams, n_ctx: int) -> bool:
    last_n = n_ctx if p.penalty_last_n < 0 else min(p.penalty_last_n, n_ctx)
    return bool(last_n and (p.repeat_penalty != 1 or p.frequency_penalty or p.presence_penalty))


def _dry_on(p: SamplingParams, n_ctx: int) -> bool:
    return bool(p.dry_multiplier > 0 and (n_ctx if p.dry_penalty_last_n < 0
                                          else min(p.dry_penalty_last_n, n_ctx)))


def top_k_first(model: Model, p: SamplingParams, n_ctx: int) -> int:
    """K when the chain's first filter is top_k K (no penalties, DRY, mirostat, top_n_sigma
    before it, and K < the vocabulary): the chain then sees only the K best logits (top_k.py).
    0 otherwise."""
    if (p.temperature <= 0 or p.mirostat or p.top_n_sigma > 0 or not 0 < p.top_k < model.n_vocab
            or _penalties_on(p, n_ctx) or _dry_on(p, n_ctx)):
        return 0
    return p.top_k


def backend_chain(p: SamplingParams, n_ctx: int) -> bool:
    """Whether every sampler of the chain for ``p`` has a version llama.cpp runs inside the
    decode's graph (logit_bias, penalties, top_k, top_p, min_p, temperature, dist, greedy), so
    that the chain can sample there (llm/context.py set_sampler). Not with a grammar, DRY,
    mirostat, top_n_sigma, typical or XTC, nor with n_probs (it reads the raw logits)."""
    if p.grammar or p.json_schema or p.n_probs or p.mirostat or _dry_on(p, n_ctx):
        return False   # mirostat replaces greedy even at temperature 0 (add_selection)
    return p.temperature <= 0 or not (p.top_n_sigma > 0 or p.typical_p < 1
                                      or p.xtc_probability > 0)


def add_history(chain: ctypes.c_void_p, model: Model, p: SamplingParams, n_ctx: int) -> bool:
    """Penalties and DRY: the samplers that remember tokens. True if any was added."""
    added = False
    last_n = n_ctx if p.penalty_last_n < 0 else min(p.penalty_last_n, n_ctx)
    if p.repeat_penalty <= 0:
        raise errors.InvalidArgument("repeat_penalty must be > 0 (1 = off)")
    if _penalties_on(p, n_ctx):
        _add(chain, C.llama_sampler_init_penalties(model.n_vocab, last_n, p.repeat_penalty,
                                                   p.frequency_penalty, p.presence_penalty),
             "penalties")
        added = True
    dry_last_n = n_ctx if p.dry_penalty_last_n < 0 else min(p.dry_penalty_last_n, n_ctx)
    if _dry_on(p, n_ctx):
        breakers = _dry_breakers(p.dry_sequence_breakers)
        array = (ctypes.c_char_p * max(1, len(breakers)))(*breakers)
        _add(chain, C.llama_sampler_init_dry(model.vocab_handle, p.dry_multiplier, p.dry_base,
                                             p.dry_allowed_length, dry_last_n, array,
                                             len(breakers)), "dry")
        added = True
    return added


def add_selection(chain: ctypes.c_void_p, model: Model, p: SamplingParams) -> None:
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
