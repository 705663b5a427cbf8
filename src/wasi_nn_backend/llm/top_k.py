"""The few candidates a top-k chain can ever pick, found in numpy, so that llama.cpp's chain
runs on about k candidates instead of the whole vocabulary (issue 16: ~40 us -> ~15 us a
token on a 32,000-token vocabulary).

A chain whose first filter is top_k K (then typical, top_p, min_p, XTC, temperature, dist in
any mix: they only see what top_k kept) depends on the row only through top_k's result: the K
largest logits, sorted. When those K + 1 largest values are all distinct, that result is one
and the same whatever array holds them, as long as the array holds them: the chain run on the
candidates picks exactly the token it picks on the full row, with the same random draw. When
two of them tie, the order llama.cpp's partial sort leaves them in depends on the whole array:
``select`` says so (None) and the caller runs the chain on the full row.

Finding them (~11 us a row of 32,000 cold from a decode, against ~40 us for llama.cpp's
top_k over the row): the maxima of 1,000 interleaved groups of the row, the (K + 1)-th largest
of them as a floor (K + 1 tokens reach it, and seldom many more), one compare pass.
"""
from __future__ import annotations

import ctypes
import math

import llama_cpp.llama_cpp as C
import numpy as np

from .grammar import TOKEN_DATA

_GROUP_ROWS = 32   # tokens per group when finding the floor (1,000 groups of 32,000 tokens)


class TopK:
    """Candidate finder and buffer for one sampler (not thread-safe: its owner's thread).
    ``bias``: token -> the float32 biases to add in order (logit_bias, ignore_eos bans)."""

    def __init__(self, k: int, bias: dict[int, list[np.float32]], n_vocab: int) -> None:
        self.k = k
        self._n = k + 1
        self._enough = k + 1 + len(bias)  # biased tokens above the floor do not count
        # Groups for _within: ``rows`` tokens each, at least 4 x ``enough`` groups.
        self._rows = max(1, min(_GROUP_ROWS, n_vocab // (4 * self._enough)))
        self._width = n_vocab // self._rows
        self._bias = bias
        self._biased = np.array(sorted(bias), dtype=np.int64)
        self._is_biased = np.zeros(n_vocab, dtype=bool)
        self._is_biased[self._biased] = True
        # Only bans (-inf): a banned token is never among the best, so it is only taken out.
        self._bans_only = all(v == -np.inf for values in bias.values() for v in values)
        self._cands = np.zeros(self._n, dtype=TOKEN_DATA)
        self._data = self._cands.ctypes.data_as(C.llama_token_data_p)
        self._array = C.llama_token_data_array(data=self._data, size=self._n, selected=-1,
                                               sorted=False)
        self.array_ref = ctypes.byref(self._array)

    def select(self, row: np.ndarray) -> bool:
        """Put the K + 1 best candidates of ``row`` (biased) in the buffer, best first; False
        when they cannot stand for the row (a tie among them, fewer than K + 1 finite values,
        a NaN or an infinity): run the chain on the whole row then."""
        found = self._within(row)
        if found is None:
            return False
        ids, values, floor = found
        n = self._n
        if self._bias:
            ids, values = self._with_bias(row, ids, values)
        if len(ids) > 4 * n:   # seldom (the floor keeps them few): sorting all is quicker
            keep = np.argpartition(values, len(values) - n)[len(values) - n:]
            ids, values = ids[keep], values[keep]
        order = np.argsort(values)[:-n - 1:-1]   # the n best, best first
        ids, values = ids[order], values[order]
        # Exact only if the K + 1 best are distinct and none left out can reach them.
        if len(values) < n or not values[n - 1] >= floor or not (values[:-1] > values[1:]).all():
            return False
        cands = self._cands
        cands["id"] = ids
        cands["logit"] = values
        cands["p"] = 0.0
        array = self._array
        array.data, array.size, array.selected, array.sorted = self._data, n, -1, False
        return True

    def _within(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.float32] | None:
        """(ids, values, floor): every token whose logit is >= floor, at least ``enough`` of
        them and seldom many more; None for a NaN or infinite maximum. The floor: the
        enough-th largest of the maxima of interleaved groups of the row (token j is in
        group j mod width), which ``enough`` distinct tokens reach, so never too high; and
        as the best tokens mostly fall in different groups, seldom much lower than the
        enough-th best token."""
        head = row[:self._rows * self._width].reshape(self._rows, self._width)
        maxima = head.max(axis=0)
        if self._rows * self._width < len(row):   # the last few tokens are groups of one
            maxima = np.concatenate((maxima, row[self._rows * self._width:]))
        top = maxima.max()
        if not -math.inf < float(top) < math.inf:   # NaN or an infinity
            return None
        rank = max(0, len(maxima) - self._enough)   # fewer groups than needed: the least
        floor = np.partition(maxima, rank)[rank]
        ids = (row >= floor).nonzero()[0]
        return ids, row[ids], floor

    def _with_bias(self, row: np.ndarray, ids: np.ndarray,
                   values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates with every biased token taken out, then put back with its biased
        value (float32 adds in order, as llama.cpp's logit_bias sampler does); banned tokens
        (-inf) stay out."""
        hit = self._is_biased[ids]
        if self._bans_only:
            return (ids[~hit], values[~hit]) if hit.any() else (ids, values)
        keep = ~hit
        extra = [biased(row[token], self._bias[token]) for token in self._biased.tolist()]
        return (np.concatenate((ids[keep], self._biased)),
                np.concatenate((values[keep], np.array(extra, dtype=np.float32))))

    def picked(self) -> int:
        """The token the chain selected, -1 if none."""
        return selected_token(self._array)


def biased(value: np.float32, biases: list[np.float32]) -> np.float32:
    """``value`` with ``biases`` added in order, in float32, as llama.cpp's logit_bias
    sampler adds them."""
    for bias in biases:
        value = np.float32(value + bias)
    return value


def add_biases(logits: np.ndarray, bias: dict[int, list[np.float32]]) -> None:
    """Add every token's biases to ``logits`` (float32, indexed by token id) in place."""
    for token, values in bias.items():
        logits[token] = biased(logits[token], values)


def selected_token(array: C.llama_token_data_array) -> int:
    """The token a chain selected in ``array``, -1 if none. Through the array's data pointer:
    a sampler may move it (XTC drops the best candidates by advancing it)."""
    selected = int(array.selected)
    return int(array.data[selected].id) if 0 <= selected < array.size else -1
