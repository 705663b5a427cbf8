"""LogitsViews: the last decode's logits as numpy rows without a copy, read straight from
llama.cpp's logits buffer.

The buffer is the llama_context's (Context owns it and says which rows the last decode
produced), so a view is valid only until the context's next decode or close, and Context drops
the view it holds at both. This module owns no C resource: it binds the buffer's getter to give
a plain address and keeps the views cheap. Right after a decode every first call runs on cold
caches: building the view and its row map took ~0.14 ms a step, and the buffer stays put from
decode to decode, so views are cached by (address, rows) and a step builds no new one.
"""
from __future__ import annotations

import ctypes

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors

_VIEW_CACHE_MAX = 64


def _pointer_getter(name: str) -> ctypes._CFuncPtr:
    """A second binding of a llama.cpp getter returning ``float *``, typed to give the address
    as a plain int (None for NULL): llama-cpp-python's own binding returns a ctypes pointer,
    which costs a cast per call. A fresh function object (``lib[name]``), so the package's
    binding keeps its own types."""
    function = C._lib[name]
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_void_p
    return function


_get_logits_address = _pointer_getter("llama_get_logits")


class LogitsViews:
    """Read-only (rows, n_vocab) float32 views of one context's logits buffer."""

    def __init__(self, n_vocab: int) -> None:
        self._n_vocab = n_vocab
        self._views: dict[tuple[int, int], np.ndarray] = {}

    def matrix(self, context: ctypes.c_void_p, rows: int) -> np.ndarray:
        """The ``rows`` logits rows of the last decode of the llama_context* ``context``."""
        address = _get_logits_address(context)
        if not address:
            raise errors.BackendRuntimeError("llama.cpp has no logits for the last decode")
        key = (address, rows)
        matrix = self._views.get(key)
        if matrix is None:
            if len(self._views) >= _VIEW_CACHE_MAX:
                self._views.clear()
            floats = (ctypes.c_float * (rows * self._n_vocab)).from_address(address)
            matrix = np.frombuffer(floats, dtype=np.float32).reshape(rows, self._n_vocab)
            matrix.flags.writeable = False
            self._views[key] = matrix
        return matrix
