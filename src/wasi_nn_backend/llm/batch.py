"""Batch: one llama_batch whose arrays are numpy buffers owned by this object.

llama_batch_init is not used: its per-token seq_id buffers are separate mallocs, so every add
would need a C-pointer write. Here every array is a numpy buffer (one sequence id per token),
so adds are plain numpy stores and nothing needs llama_batch_free. A llama_batch struct pointing
at those buffers is handed to llama_decode by Context.decode, which also checks the limits that
llama.cpp asserts on (n_batch, sequence ids).
"""
from __future__ import annotations

import ctypes
import operator
from collections.abc import Sequence

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors

# llama.cpp's positions and token ids are int32.
_INT32_MAX = (1 << 31) - 1


class Batch:
    """Up to ``capacity`` tokens, each in exactly one sequence, each optionally producing logits.
    Not thread-safe: one owner (the engine thread) fills and decodes it."""

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or not 1 <= capacity <= 1 << 20:
            raise errors.InvalidArgument(f"batch capacity must be in [1, 2^20], got {capacity!r}")
        self._capacity = capacity
        self._n_tokens = 0
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.positions = np.zeros(capacity, dtype=np.int32)
        self.seq_ids = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self._n_seq_id = np.ones(capacity, dtype=np.int32)
        # seq_id is int32** in C: pointer i points at self.seq_ids[i].
        base = self.seq_ids.ctypes.data
        self._seq_ptrs = (base + 4 * np.arange(capacity, dtype=np.uintp)).astype(np.uintp)
        self._struct = C.llama_batch(
            n_tokens=0,
            token=self.tokens.ctypes.data_as(ctypes.POINTER(C.llama_token)),
            embd=None,
            pos=self.positions.ctypes.data_as(ctypes.POINTER(C.llama_pos)),
            n_seq_id=self._n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_ptrs.ctypes.data_as(ctypes.POINTER(ctypes.POINTER(C.llama_seq_id))),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        # ctypes views of the same memory: one item set through them is a fraction of numpy's
        # scalar assignment (what add() does per decode token).
        self._c_tokens = (ctypes.c_int32 * capacity).from_buffer(self.tokens)
        self._c_positions = (ctypes.c_int32 * capacity).from_buffer(self.positions)
        self._c_seq_ids = (ctypes.c_int32 * capacity).from_buffer(self.seq_ids)
        self._c_logits = (ctypes.c_int8 * capacity).from_buffer(self.logits)
        self._closed = False
        self._rows: dict[int, int] = {}  # batch index -> its row among the outputs
        self._max_seq = -1

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def n_tokens(self) -> int:
        return self._n_tokens

    @property
    def max_seq_id(self) -> int:
        """The largest sequence id in the batch (-1 when empty)."""
        return self._max_seq

    def output_rows(self) -> dict[int, int]:
        """{batch index: row in llama.cpp's logits} for the tokens that produce logits: rows
        come in batch order (llama.h, llama_get_logits). Kept as tokens are added, so reading
        it costs no pass over the arrays."""
        return dict(self._rows)

    def _check_room(self, count: int) -> None:
        if self._closed:
            raise errors.BackendRuntimeError("batch is closed")
        if self._n_tokens + count > self._capacity:
            raise errors.BackendRuntimeError(
                f"batch full: {self._n_tokens} + {count} tokens > capacity {self._capacity}")

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one token; returns its batch index (what logits/sampling take)."""
        self._check_room(1)
        try:  # operator.index: ints (numpy ints too), never floats or strings
            token, pos, seq_id = operator.index(token), operator.index(pos), operator.index(seq_id)
        except TypeError as exc:
            raise errors.InvalidArgument(f"batch entries must be integers: {exc}") from exc
        if not 0 <= token <= _INT32_MAX or not 0 <= pos < _INT32_MAX or not 0 <= seq_id:
            raise errors.InvalidArgument(
                f"bad batch entry: token={token} pos={pos} seq_id={seq_id}")
        index = self._n_tokens
        self._c_tokens[index] = token
        self._c_positions[index] = pos
        self._c_seq_ids[index] = seq_id
        self._c_logits[index] = 1 if logits else 0
        if logits:
            self._rows[index] = len(self._rows)
        if seq_id > self._max_seq:
            self._max_seq = seq_id
        self._n_tokens = index + 1
        return index

    def retoken(self, index: int, token: int, pos: int) -> None:
        """New token id and position for the token at ``index``, all else kept: a decode step
        that repeats the last one's layout (same sequences, outputs, order)."""
        if not 0 <= index < self._n_tokens:
            raise errors.BackendRuntimeError(f"no token at batch index {index}")
        self._c_tokens[index] = token
        self._c_positions[index] = pos

    def add_sequence(self, tokens: Sequence[int] | np.ndarray, start_pos: int, seq_id: int,
                     *, logits_last: bool = True, logits_all: bool = False) -> int:
        """Append consecutive tokens of one sequence at start_pos, start_pos+1, ... (vectorised
        prompt prefill). Returns the batch index of the last token, or -1 when none added.
        ``logits_all`` marks every token as an output (embedding contexts need that)."""
        array = np.asarray(tokens, dtype=np.int64)
        count = int(array.size)
        if count == 0:
            return -1
        self._check_room(count)
        if (array.min() < 0 or array.max() > _INT32_MAX or start_pos < 0
                or start_pos + count > _INT32_MAX or seq_id < 0):
            raise errors.InvalidArgument("bad batch entries: negative or out-of-range values")
        begin, end = self._n_tokens, self._n_tokens + count
        self.tokens[begin:end] = array
        self.positions[begin:end] = np.arange(start_pos, start_pos + count, dtype=np.int32)
        self.seq_ids[begin:end] = seq_id
        self.logits[begin:end] = 1 if logits_all else 0
        rows = self._rows
        if logits_all:
            first = len(rows)
            rows.update((index, first + index - begin) for index in range(begin, end))
        elif logits_last:
            self.logits[end - 1] = 1
            rows[end - 1] = len(rows)
        self._max_seq = max(self._max_seq, seq_id)
        self._n_tokens = end
        return end - 1

    def clear(self) -> None:
        self._n_tokens = 0
        self._rows = {}
        self._max_seq = -1

    def c_struct(self) -> C.llama_batch:
        """The llama_batch describing the current contents (valid while self lives)."""
        if self._closed:
            raise errors.BackendRuntimeError("batch is closed")
        self._struct.n_tokens = self._n_tokens
        return self._struct

    def close(self) -> None:
        """Idempotent. The numpy buffers go with the object; nothing to free in C."""
        self._closed = True
        self._n_tokens = 0

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
