"""Sampler: owns one sequence's llama.cpp sampler chain (and, with a grammar, the chain that
runs before the grammar, and the GrammarGuard), built from SamplingParams by sampler_chain.py.

Without a grammar, sampling is one llama_sampler_sample call. With one, the grammar is not in
the chain (see grammar.py): logits are copied into a candidate array, logit_bias and the
guarded grammar are applied, then the rest of the chain, and the chosen token is checked
against the grammar before anything accepts it.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterable

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors
from ..config import SamplingParams
from .context import Context
from .grammar import TOKEN_DATA, GrammarRejected, make_guard
from .model import Model
from .sampler_chain import (add_bias, add_history, add_selection, backend_chain, bias_entries,
                            top_k_first)
from .top_k import TopK, add_biases, biased, selected_token

log = logging.getLogger(__name__)


def _new_chain() -> ctypes.c_void_p:
    chain_params = C.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    return C.llama_sampler_chain_init(chain_params)


class Sampler:
    """Samples tokens for one sequence. Not thread-safe: one owner (the engine thread)."""

    def __init__(self, model: Model, params: SamplingParams, *, n_ctx: int,
                 backend: bool = False) -> None:
        self._model = model
        # backend: the chain may sample inside llama_decode's graph (the engine attaches it to
        # the sequence: Context.set_sampler); it is then the whole chain, logit_bias in it.
        self.backend = backend and backend_chain(params, max(1, n_ctx))
        self.attached = False   # set by the engine while the context samples with the chain
        self._pre = self._chain = self._grammar = None
        self._registered = False
        self._grammar = make_guard(model, params)
        model.register_dependent(self)
        self._registered = True
        top_k = 0 if self._grammar is not None or self.backend else \
            top_k_first(model, params, max(1, n_ctx))
        try:
            bias = bias_entries(model, params)
            self._chain = _new_chain()
            if self._grammar is not None:
                # logit_bias must run before the grammar, so it gets a chain of its own.
                self._pre = _new_chain()
                add_bias(self._pre, model, bias)
            elif not top_k:  # with top_k first, numpy adds the biases (top_k.py)
                add_bias(self._chain, model, bias)
            self._has_history = add_history(self._chain, model, params, max(1, n_ctx))
            self._history_n = max(n_ctx if n < 0 else n for n in
                                  (params.penalty_last_n, params.dry_penalty_last_n, 1))
            add_selection(self._chain, model, params)
        except BaseException:
            self.close()
            raise
        self._n_vocab = model.n_vocab
        # Plain greedy (no grammar, no penalties/DRY, no mirostat): the chain would only add
        # logit_bias to the logits and take the first maximum, so numpy does exactly that,
        # without llama_sampler_sample building an n_vocab candidate array every token.
        self.fast_greedy = (self._grammar is None and params.temperature <= 0
                            and not params.mirostat and not self._has_history
                            and not self.backend)
        self._bias: dict[int, list[np.float32]] = {}  # token -> its biases, added in order
        for token, value in bias:
            self._bias.setdefault(token, []).append(np.float32(value))
        # Only bans (-inf: ignore_eos, or a user's): a banned token never beats a finite
        # maximum, so the argmax stands unless it is banned itself.
        self._bans_only = all(v == -np.inf for values in self._bias.values() for v in values)
        self._ids = np.arange(self._n_vocab, dtype=np.int32)
        self._candidates: np.ndarray | None = None   # the whole vocabulary (_full_candidates)
        # A chain that starts with top_k runs on the few candidates it can pick (top_k.py).
        self._top_k = TopK(top_k, self._bias, self._n_vocab) if top_k else None

    @property
    def model(self) -> Model:
        return self._model

    @property
    def has_grammar(self) -> bool:
        return self._grammar is not None

    @property
    def releases_gil(self) -> bool:
        """sample() is one llama.cpp call (no grammar, not the numpy greedy path): it may
        run beside other samplers' calls, on another thread (engine/sampling_pool.py)."""
        return (self._grammar is None and not self.fast_greedy and self._top_k is None
                and not self.attached)

    @property
    def closed(self) -> bool:
        return self._chain is None

    @property
    def chain(self) -> ctypes.c_void_p:
        """The llama_sampler chain (borrowed: for Context.set_sampler while backend)."""
        return self._live()

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

    def sample(self, context: Context, batch_index: int) -> int:
        """Pick the next token from the logits at ``batch_index`` and accept it."""
        if context.model is not self._model:
            # logit_bias/penalty tables are sized for this model's vocabulary.
            raise errors.InvalidArgument("sampler and context belong to different models")
        if self._chain is None:
            raise errors.BackendRuntimeError("sampler is closed")
        if self.fast_greedy:  # logits_view raises InvalidArgument for an index without logits
            return self._greedy(context.logits_view(batch_index))
        if self.attached:
            return self._sample_in_graph(context, batch_index)
        if not context.has_logits(batch_index):
            raise errors.InvalidArgument(
                f"batch index {batch_index} has no logits from the last decode")
        if self._top_k is not None:
            return self._sample_top_k(context.logits_view(batch_index))
        if self._grammar is None:
            return int(C.llama_sampler_sample(self._live(), context.handle, batch_index))
        return self._sample_guarded(context, batch_index)

    def _sample_in_graph(self, context: Context, batch_index: int) -> int:
        """The decode's graph ran the chain (or the first samplers of it, where the device
        lacks an op for the rest: llama.cpp sets up a prefix and leaves the rest to the host).
        Its token, accepted; else the rest of the chain on the host over the candidates the
        graph left (llama_sampler_sample, which skips the prefix that ran); else, with
        nothing to sample from (llama.cpp would assert on the missing logits), an error for
        this request alone."""
        chain = self._live()
        token = context.sampled_token(batch_index)
        if token >= 0:
            C.llama_sampler_accept(chain, token)
            return token
        if context.has_sampled_candidates(batch_index):
            return int(C.llama_sampler_sample(chain, context.handle, batch_index))
        raise errors.BackendRuntimeError("the sampler chain left nothing to sample from in "
                                         "the decode's graph")

    def _sample_top_k(self, logits: np.ndarray) -> int:
        """The chain (no logit_bias in it: numpy adds the biases) on the K + 1 best biased
        logits, or on the whole biased row when those cannot stand for it (top_k.py). The
        same token as llama_sampler_sample with the biases in the chain, the same draw."""
        chain, top_k = self._live(), self._top_k
        if top_k.select(logits):
            C.llama_sampler_apply(chain, top_k.array_ref)
            token = top_k.picked()
        else:
            token = self._sample_row(chain, logits)
        if token < 0:
            raise errors.BackendRuntimeError("the sampler chain selected no token")
        C.llama_sampler_accept(chain, token)
        return token

    def _sample_row(self, chain: ctypes.c_void_p, logits: np.ndarray) -> int:
        """The chain on every token, in id order, its logits biased (as llama_sampler_sample
        does with a logit_bias sampler first in the chain)."""
        cands, array = self._full_candidates(logits)
        add_biases(cands["logit"], self._bias)
        C.llama_sampler_apply(chain, ctypes.byref(array))
        return selected_token(array)

    def _full_candidates(self, logits: np.ndarray
                         ) -> tuple[np.ndarray, C.llama_token_data_array]:
        """Every token with its logit, in id order (the buffer is kept from call to call),
        and the llama_token_data_array over it."""
        cands = self._candidates
        if cands is None:
            cands = self._candidates = np.zeros(self._n_vocab, dtype=TOKEN_DATA)
        cands["id"] = self._ids
        cands["logit"] = logits
        cands["p"] = 0.0
        return cands, C.llama_token_data_array(
            data=cands.ctypes.data_as(C.llama_token_data_p), size=self._n_vocab, selected=-1,
            sorted=False)

    def _greedy(self, logits: np.ndarray) -> int:
        # the method: np.argmax adds a Python-level dispatch
        return self.greedy_from(logits, int(logits.argmax()))

    def greedy_from(self, logits: np.ndarray, best: int) -> int:
        """The first maximum of logits + logit_bias (llama.cpp's greedy after its logit_bias
        sampler), given ``best``, the first maximum of the row itself (fast_greedy samplers
        only; the engine takes the argmax of many rows in one call). Without copying the
        row: only the biased tokens can change the answer."""
        self._live()  # raises when closed
        if not self._bias:
            return best
        if self._bans_only and best not in self._bias and logits[best] > -np.inf:
            return best
        if best in self._bias:  # its own bias decides: do it the long way
            row = logits.copy()
            add_biases(row, self._bias)
            return int(np.argmax(row))
        best_value = logits[best]
        for token, values in self._bias.items():
            value = biased(logits[token], values)
            if value > best_value or (value == best_value and token < best):
                best, best_value = token, value
        return best

    def _sample_guarded(self, context: Context, batch_index: int) -> int:
        chain = self._live()
        cands, array = self._full_candidates(context.logits_view(batch_index))
        C.llama_sampler_apply(self._pre, ctypes.byref(array))
        self._grammar.apply(array)
        allowed = cands["logit"].copy()  # still in id order: bias and grammar do not reorder
        if not np.isfinite(allowed).any():
            raise GrammarRejected("the grammar allows no token here",
                                  complete=self._grammar.is_complete())
        C.llama_sampler_apply(chain, ctypes.byref(array))
        token = selected_token(array)
        if token < 0 or not np.isfinite(allowed[token]):
            token = int(np.argmax(allowed))  # dist can land on a p=0 token when rnd == 0
        self._grammar.accept(token)
        C.llama_sampler_accept(self._pre, token)
        C.llama_sampler_accept(chain, token)
        return token

    def top_probs(self, context: Context, batch_index: int, n: int) -> list[tuple[int, float]]:
        """The n most likely tokens under the raw logits (softmax, before any sampler)."""
        logits = context.logits_view(batch_index).astype(np.float64)
        n = max(0, min(int(n), self._n_vocab))
        if n == 0:
            return []
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argpartition(-probs, n - 1)[:n]
        top = top[np.argsort(-probs[top], kind="stable")]
        return [(int(t), float(probs[t])) for t in top]

    def rechain(self) -> None:
        """Go on with a clone of the chain (its state, RNG included), freeing this one: a
        chain set up for a decode's graph cannot be set up again, nor run on the host."""
        chain = self._live()
        clone = C.llama_sampler_clone(chain)
        if not clone:
            raise errors.BackendRuntimeError("llama.cpp could not clone the sampler chain")
        self._chain = clone
        C.llama_sampler_free(chain)

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
