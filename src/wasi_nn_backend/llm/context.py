"""Context: owns one llama_context* (KV memory, compute buffers, logits of the last decode).

Every call that llama.cpp would answer with GGML_ASSERT/GGML_ABORT (which kills the process)
is checked here first and raised as an exception instead: settings (context_params.py), batch
larger than n_batch (for a non-causal model: n_ubatch), sequence ids outside [0, n_seq_max),
partial seq_cp across split KV streams, K-shift on memory that cannot shift, logits of a batch
index that produced none. The table of checks: config/limits.py. Not thread-safe: one owner
thread. Views of the logits buffer: logits.py. Longer than ~300 lines because every call on
the llama_context* (decode, KV memory, sequence state) belongs to its one owner, this class.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import operator
import time

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors
from .batch import Batch
from .context_params import check_cache_types, context_params, quantized_k_can_shift
from .context_params import index as _index
from .logits import LogitsViews
from .model import Model
from .pooling import pooling_name

log = logging.getLogger(__name__)

_NO_OUTPUTS: dict[int, int] = {}

# llama_get_causal_attn(ctx): the bindings do not wrap it.
_get_causal_attn = C._lib["llama_get_causal_attn"]
_get_causal_attn.argtypes = [ctypes.c_void_p]
_get_causal_attn.restype = ctypes.c_bool


class Context:
    """A llama_context on ``model`` with ``n_seq_max`` KV sequences.

    ``n_ctx`` is the total KV size in tokens (llama.cpp's meaning): with kv_unified all
    sequences share it; otherwise each sequence gets n_ctx_seq = n_ctx / n_seq_max.
    """

    def __init__(self, model: Model, *, n_ctx: int, n_batch: int, n_ubatch: int | None = None,
                 n_seq_max: int = 1, n_threads: int | None = None,
                 n_threads_batch: int | None = None, flash_attn: str | bool = "auto",
                 kv_unified: bool = True, type_k: str = "f16", type_v: str = "f16",
                 no_perf: bool = False, embeddings: bool = False,
                 pooling: str | None = None, outputs_per_seq: int = 0) -> None:
        self._handle = None
        if _index("n_ctx", n_ctx) == 0:  # llama.cpp's meaning: the model's training context
            n_ctx = model.n_ctx_train
        params = context_params(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                 n_seq_max=n_seq_max, n_threads=n_threads,
                                 n_threads_batch=n_threads_batch, flash_attn=flash_attn,
                                 kv_unified=kv_unified, type_k=type_k, type_v=type_v,
                                 no_perf=no_perf, embeddings=embeddings, pooling=pooling,
                                 outputs_per_seq=outputs_per_seq)
        self._outputs_per_seq = outputs_per_seq
        if C.llama_model_has_encoder(model.handle):
            raise errors.UnsupportedOperation("encoder(-decoder) models are not supported")
        check_cache_types(model, type_k, type_v)
        handle = C.llama_init_from_model(model.handle, params)
        if not handle:
            raise errors.BackendRuntimeError(
                f"llama.cpp could not create a context (n_ctx={n_ctx}, n_batch={n_batch}, "
                f"n_seq_max={n_seq_max}, type_k={type_k}, type_v={type_v}); see the log")
        self._handle = handle
        self._model = model
        model.register_dependent(self)
        # Encoder-only embedding models (BERT) have no KV memory: llama_decode encodes.
        self._mem = C.llama_get_memory(handle) or None
        if self._mem is None and not embeddings:
            self.close()
            raise errors.UnsupportedOperation("this model has no KV memory (not generative)")
        self._kv_unified = bool(kv_unified)
        self._k_can_shift = quantized_k_can_shift(model, type_k)
        self._n_vocab = model.n_vocab
        self._n_ubatch = int(C.llama_n_ubatch(handle))
        self._n_seq_max = int(C.llama_n_seq_max(handle))
        # Non-causal attention asserts n_tokens <= n_ubatch inside llama_decode, so for such
        # a model a decode is one micro-batch (n_batch here says so to the engine), which
        # must hold a token of every sequence.
        self._causal = bool(_get_causal_attn(handle))
        self._n_batch = int(C.llama_n_batch(handle))
        if not self._causal:
            self._n_batch = min(self._n_batch, self._n_ubatch)
            if self._n_batch < self._n_seq_max and not embeddings:
                self.close()
                raise errors.InvalidArgument(
                    f"this model attends bidirectionally (non-causal): a decode must fit one "
                    f"micro-batch of n_ubatch={self._n_batch} tokens, fewer than the "
                    f"n_seq_max={self._n_seq_max} sequences it must hold")
        self._outputs = _NO_OUTPUTS  # batch index -> logits row, for the last decode
        self._logits: np.ndarray | None = None  # the last decode's logits rows
        self._views = LogitsViews(self._n_vocab)
        self.decode_seconds = 0.0  # time inside llama_decode calls (for overhead benches)

    # --- lifetime ------------------------------------------------------------------------

    @property
    def handle(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise errors.BackendRuntimeError("context is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Free the context. Idempotent; Model.close() calls it first."""
        handle, self._handle = self._handle, None
        self._outputs = _NO_OUTPUTS
        self._logits = None
        if handle is not None:
            C.llama_free(handle)
            self._model.dependent_closed()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down C
            self.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- facts ---------------------------------------------------------------------------

    model = property(lambda self: self._model)
    n_batch = property(lambda self: self._n_batch)
    n_ubatch = property(lambda self: self._n_ubatch)
    n_seq_max = property(lambda self: self._n_seq_max)
    kv_unified = property(lambda self: self._kv_unified)
    has_memory = property(lambda self: self._mem is not None)

    @property
    def pooling(self) -> str:
        """The pooling llama.cpp applies to embeddings (none, mean, cls, last, rank)."""
        return pooling_name(C.llama_pooling_type(self.handle))

    @property
    def n_ctx(self) -> int:
        return int(C.llama_n_ctx(self.handle))

    @property
    def n_ctx_seq(self) -> int:
        return int(C.llama_n_ctx_seq(self.handle))

    def perf(self) -> dict[str, float]:
        data = C.llama_perf_context(self.handle)
        return {name: getattr(data, name) for name, _ in data._fields_}

    # --- decode and logits ---------------------------------------------------------------

    def decode(self, batch: Batch) -> int:
        """Run llama_decode; returns its code (0 ok, 1 no KV slot, 2 aborted, -1 invalid
        batch, < -1 fatal). Raises instead of letting llama.cpp assert."""
        handle = self.handle
        count = batch.n_tokens
        if count == 0:
            raise errors.InvalidArgument("cannot decode an empty batch")
        if count > self._n_batch:
            raise errors.BackendRuntimeError(
                f"batch of {count} tokens exceeds the context's n_batch={self._n_batch}")
        if not self._causal and count > self._n_ubatch:
            raise errors.BackendRuntimeError(
                f"non-causal model: batch of {count} tokens exceeds n_ubatch={self._n_ubatch}")
        if batch.max_seq_id >= self._n_seq_max:
            raise errors.InvalidArgument(f"batch has a sequence id >= n_seq_max={self._n_seq_max}")
        self._outputs = _NO_OUTPUTS  # logits of any earlier decode are gone from here on
        self._logits = None
        struct = batch.c_struct()
        began = time.perf_counter()
        code = int(C.llama_decode(handle, struct))
        self.decode_seconds += time.perf_counter() - began
        if code == 0:
            self._outputs = batch.output_rows()
        return code

    def _row(self, batch_index: int) -> int | None:
        """The logits row of ``batch_index`` in the last decode, None if it has none."""
        try:  # ints and numpy ints; never floats (3.0 would find row 3 in the dict)
            return self._outputs.get(operator.index(batch_index))
        except TypeError:
            return None

    def has_logits(self, batch_index: int) -> bool:
        """Whether the last successful decode produced logits at ``batch_index``."""
        return self._row(batch_index) is not None

    def logits_view(self, batch_index: int) -> np.ndarray:
        """Read-only view of a logits row; valid only until the next decode. Prefer logits_row."""
        row = self._row(batch_index)
        if row is None:
            raise errors.InvalidArgument(
                f"batch index {batch_index} has no logits from the last decode")
        matrix = self._logits
        if matrix is None:
            matrix = self._logits = self._views.matrix(self.handle, len(self._outputs))
        return matrix[row]

    def logits_matrix(self, batch_indices: list[int]) -> tuple[np.ndarray, list[int]]:
        """The last decode's logits as one read-only (rows, n_vocab) view, and the row of
        each of ``batch_indices`` in it (InvalidArgument for one without logits); valid only
        until the next decode. For work on many rows at once (one numpy call, not one each)."""
        rows = []
        for batch_index in batch_indices:
            row = self._row(batch_index)
            if row is None:
                raise errors.InvalidArgument(
                    f"batch index {batch_index} has no logits from the last decode")
            rows.append(row)
        matrix = self._logits
        if matrix is None:
            matrix = self._logits = self._views.matrix(self.handle, len(self._outputs))
        return matrix, rows

    # --- backend sampling (a sampler chain in the decode's graph, per sequence) ------------

    def set_sampler(self, seq: int, chain: ctypes.c_void_p | None) -> bool:
        """Have llama_decode sample ``seq``'s output in its graph with ``chain`` (None: stop).
        True also when only a prefix of the chain has a graph version on this device (the
        rest runs on the host: Sampler); False only where llama.cpp offers none at all
        (tensor split mode). The chain must stay alive while set;
        its owner sets None before freeing it. Each change rebuilds the graph at the next
        decode. Needs a context made with outputs_per_seq=1 (one output a sequence)."""
        seq = self._seq(seq)
        if chain is not None and self._outputs_per_seq != 1:
            raise errors.BackendRuntimeError("backend sampling needs a context made with "
                                             "outputs_per_seq=1")
        return bool(C.llama_set_sampler(self.handle, seq, chain))

    def sampled_token(self, batch_index: int) -> int:
        """The token the graph sampled at ``batch_index`` in the last decode (set_sampler),
        -1 if none (LLAMA_TOKEN_NULL); InvalidArgument for an index without an output."""
        if self._row(batch_index) is None:
            raise errors.InvalidArgument(
                f"batch index {batch_index} has no output from the last decode")
        token = int(C.llama_get_sampled_token_ith(self.handle, batch_index))
        return token if 0 <= token < self._n_vocab else -1

    def has_sampled_candidates(self, batch_index: int) -> bool:
        """Whether the graph left probabilities or logits of candidates at ``batch_index``
        (a chain only partly run in the graph), for the host to finish sampling from."""
        if self._row(batch_index) is None:
            return False
        return bool(C.llama_get_sampled_probs_ith(self.handle, batch_index)
                    or C.llama_get_sampled_logits_ith(self.handle, batch_index))

    def logits_row(self, batch_index: int) -> np.ndarray:
        """A float32 copy of the logits (n_vocab) for the token at ``batch_index``."""
        return self.logits_view(batch_index).copy()

    # --- KV memory -----------------------------------------------------------------------

    def _memory(self) -> ctypes.c_void_p:
        if self._mem is None:
            raise errors.UnsupportedOperation("this model has no KV memory")
        return self._mem

    def _seq(self, seq: object) -> int:
        seq = _index("sequence id", seq)
        if not 0 <= seq < self._n_seq_max:
            raise errors.InvalidArgument(f"sequence id {seq} outside [0, {self._n_seq_max})")
        self.handle  # raises when closed
        return seq

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) (negative = open end). False if a partial removal is
        impossible for this memory type (recurrent/SWA)."""
        seq = self._seq(seq)
        if self._mem is None:
            return True  # no memory: nothing is held
        return bool(C.llama_memory_seq_rm(self._mem, seq, _index("p0", p0), _index("p1", p1)))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Make dst share src's cells in [p0, p1). Split KV (kv_unified=False) copies whole
        streams, and llama.cpp asserts on a partial range there, so that is refused."""
        src, dst = self._seq(src), self._seq(dst)
        p0, p1 = _index("p0", p0), _index("p1", p1)
        self._memory()
        if not self._kv_unified and src != dst and (p0 > 0 or p1 > 0):
            raise errors.InvalidArgument("partial seq_cp needs kv_unified=True")
        C.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def seq_add(self, seq: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions in [p0, p1) by delta (applied as a K-shift at the next decode)."""
        seq = self._seq(seq)
        if not self.can_shift():
            # Decoding after a shift on such memory is a GGML_ABORT (or, for a quantized K
            # without llama.cpp's rotation matrix, a SIGSEGV: context_params.py).
            raise errors.UnsupportedOperation("this model's KV memory cannot shift positions")
        C.llama_memory_seq_add(self._mem, seq, _index("p0", p0), _index("p1", p1),
                               _index("delta", delta))

    def seq_keep(self, seq: int) -> None:
        """Remove every sequence except ``seq``."""
        C.llama_memory_seq_keep(self._memory(), self._seq(seq))

    def seq_pos_min(self, seq: int) -> int:
        """Smallest position in ``seq``; -1 when empty."""
        seq = self._seq(seq)
        return -1 if self._mem is None else int(C.llama_memory_seq_pos_min(self._mem, seq))

    def seq_pos_max(self, seq: int) -> int:
        """Largest position in ``seq``; -1 when empty. The next token goes at this + 1."""
        seq = self._seq(seq)
        return -1 if self._mem is None else int(C.llama_memory_seq_pos_max(self._mem, seq))

    def can_shift(self) -> bool:
        self.handle  # raises when closed
        return (self._mem is not None and self._k_can_shift
                and bool(C.llama_memory_can_shift(self._mem)))

    def clear(self, *, zero_data: bool = False) -> None:
        """Empty every sequence (zero_data also zeroes the buffers, which is slow)."""
        self.handle  # raises when closed
        if self._mem is not None:
            C.llama_memory_clear(self._mem, bool(zero_data))
        self._outputs = _NO_OUTPUTS

    # --- per-sequence state (swap to host RAM) -------------------------------------------

    def state_seq_size(self, seq: int) -> int:
        self._memory()
        return int(C.llama_state_seq_get_size(self.handle, self._seq(seq)))

    def state_seq_get(self, seq: int) -> bytes:
        """The KV cells of ``seq`` as bytes (restorable into any sequence of this context)."""
        seq = self._seq(seq)
        self._memory()
        size = int(C.llama_state_seq_get_size(self.handle, seq))
        if size == 0:
            raise errors.BackendRuntimeError(f"llama.cpp could not size the state of seq {seq}")
        buf = (ctypes.c_uint8 * size)()
        written = int(C.llama_state_seq_get_data(self.handle, buf, size, seq))
        if written == 0:
            raise errors.BackendRuntimeError(f"llama.cpp could not save the state of seq {seq}")
        return ctypes.string_at(buf, written)

    def state_seq_set(self, seq: int, data: bytes) -> bool:
        """Replace ``seq`` with saved state. Only pass bytes from state_seq_get of a context
        with the same model and KV settings. False (and ``seq`` left empty) on failure,
        e.g. when the KV has no room."""
        seq = self._seq(seq)
        self._memory()
        data = bytes(data)
        if not data:
            raise errors.InvalidArgument("empty sequence state")
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return int(C.llama_state_seq_set_data(self.handle, buf, len(data), seq)) != 0
