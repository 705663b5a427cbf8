"""Model: owns one llama_model*; vocabulary, tokenizer, chat template.

Every method that takes a token id checks it first: llama.cpp indexes its vocabulary with
std::vector::at, and the exception it throws for a bad id cannot cross the C API (terminate).
The tokenizer is thread-safe in llama.cpp; this class keeps no shared mutable buffers.
About 300 lines with no seam: the vocabulary is the llama_model*'s, so its one owner, this
class, makes every call on it (loading, lifetime, facts, tokens, chat template).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import operator
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import llama_cpp.llama_cpp as C

from .. import errors
from .chat_template import render_template
from .lib import check_model_file, ensure_backend
from .token_bound import TokenBound

log = logging.getLogger(__name__)

# llama_tokenize takes int32 lengths; beyond this the count overflows.
_MAX_TEXT_BYTES = (1 << 31) - 1

ProgressFn = Callable[[float], "bool | None"]


def _read_string(fill: Callable[[ctypes.Array, int], int], initial: int = 256) -> str | None:
    """Call a snprintf-style llama function, growing the buffer until the text fits."""
    size = initial
    while True:
        buf = ctypes.create_string_buffer(size)
        needed = fill(buf, size)
        if needed < 0:
            return None
        if needed < size:
            return buf.value.decode("utf-8", errors="replace")
        size = needed + 1


class Model:
    """A loaded GGUF model. Create with Model.load; close() frees it (after its contexts)."""

    def __init__(self, handle: ctypes.c_void_p, path: str) -> None:
        self._handle = handle
        self.path = path
        self._vocab = C.llama_model_get_vocab(handle)
        self._n_vocab = int(C.llama_vocab_n_tokens(self._vocab))
        self._pieces: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})  # [special]
        self._eog: tuple[int, ...] | None = None
        self._token_bound: TokenBound | None = None
        self._eog_set: frozenset[int] | None = None
        # Contexts and samplers made from this model: they hold pointers into it, so
        # close() closes them first (weak: dropping one must not be kept alive here).
        self._dependents: weakref.WeakSet = weakref.WeakSet()
        self._open_dependents = 0
        self._free_pending = False

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, n_gpu_layers: int = 0,
             use_mmap: bool = True, progress: ProgressFn | None = None) -> Model:
        path = os.fspath(path)
        check_model_file(path)
        ensure_backend()
        params = C.llama_model_default_params()
        params.n_gpu_layers = int(n_gpu_layers)
        mmap_ok = use_mmap and C.llama_supports_mmap()
        params.load_mode = C.LLAMA_LOAD_MODE_MMAP if mmap_ok else C.LLAMA_LOAD_MODE_NONE
        cancelled = []
        if progress is not None:
            def on_progress(fraction: float, _user: ctypes.c_void_p) -> bool:
                try:
                    keep_going = progress(float(fraction)) is not False
                except Exception:  # noqa: BLE001 - must not unwind into C
                    log.exception("model load progress callback failed; cancelling")
                    keep_going = False
                if not keep_going:
                    cancelled.append(True)
                return keep_going
            # Referenced by this frame for the whole load, so C never calls a freed thunk.
            params.progress_callback = C.llama_progress_callback(on_progress)
        handle = C.llama_model_load_from_file(path.encode("utf-8"), params)
        if not handle:
            if cancelled:
                raise errors.BackendRuntimeError(f"model load cancelled: {path}")
            raise errors.BackendRuntimeError(f"llama.cpp failed to load the model: {path}")
        model = cls(handle, path)
        log.info("loaded %s: %s, %d params", path, model.description, model.n_params)
        return model

    # --- lifetime ------------------------------------------------------------------------

    @property
    def handle(self) -> ctypes.c_void_p:
        if self._handle is None or self._free_pending:
            raise errors.BackendRuntimeError("model is closed")
        return self._handle

    @property
    def vocab_handle(self) -> ctypes.c_void_p:
        self.handle  # raises when closed
        return self._vocab

    @property
    def closed(self) -> bool:
        return self._handle is None or self._free_pending

    def register_dependent(self, obj: object) -> None:
        """Record a Context/Sampler built on this model; its close() must call
        dependent_closed() exactly once."""
        self._dependents.add(obj)
        self._open_dependents += 1

    def dependent_closed(self) -> None:
        self._open_dependents -= 1
        if self._free_pending and self._open_dependents <= 0:
            self._free()

    def close(self) -> None:
        """Free the model, closing its contexts and samplers first. Idempotent."""
        if self._handle is None or self._free_pending:
            return
        for dependent in list(self._dependents):
            dependent.close()
        if self._open_dependents > 0:
            # Only when a reference cycle is collected: the weak references are cleared
            # before the finalizers run, so the last dependent to close frees the model.
            self._free_pending = True
            return
        self._free()

    def _free(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            C.llama_model_free(handle)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down C
            self.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- facts ---------------------------------------------------------------------------

    n_vocab = property(lambda self: self._n_vocab)
    n_ctx_train = property(lambda self: int(C.llama_model_n_ctx_train(self.handle)))
    n_embd = property(lambda self: int(C.llama_model_n_embd(self.handle)))
    n_embd_out = property(lambda self: int(C.llama_model_n_embd_out(self.handle)))
    n_layer = property(lambda self: int(C.llama_model_n_layer(self.handle)))
    n_params = property(lambda self: int(C.llama_model_n_params(self.handle)))
    size_bytes = property(lambda self: int(C.llama_model_size(self.handle)))
    bos_token = property(lambda self: int(C.llama_vocab_bos(self.vocab_handle)))
    eos_token = property(lambda self: int(C.llama_vocab_eos(self.vocab_handle)))
    add_bos = property(lambda self: bool(C.llama_vocab_get_add_bos(self.vocab_handle)))

    @property
    def description(self) -> str:
        return _read_string(lambda buf, n: C.llama_model_desc(self.handle, buf, n)) or ""

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")

    @property
    def metadata(self) -> dict[str, str]:
        """Every GGUF key/value as text (arrays are summarised by llama.cpp)."""
        handle = self.handle
        result: dict[str, str] = {}
        for i in range(int(C.llama_model_meta_count(handle))):
            key = _read_string(lambda buf, n: C.llama_model_meta_key_by_index(handle, i, buf, n))
            val = _read_string(
                lambda buf, n: C.llama_model_meta_val_str_by_index(handle, i, buf, n))
            if key is not None and val is not None:
                result[key] = val
        return result

    # --- tokens --------------------------------------------------------------------------

    def valid_token(self, token: int) -> bool:
        try:
            return 0 <= operator.index(token) < self._n_vocab
        except TypeError:
            return False

    def _check_token(self, token: int) -> int:
        if not self.valid_token(token):
            raise errors.InvalidArgument(f"token id {token!r} is outside the vocabulary "
                                         f"[0, {self._n_vocab})")
        return operator.index(token)

    def check_tokens(self, tokens: Sequence[Any], limit: int, what: str = "the prompt"
                     ) -> list[int]:
        """Token ids given by a caller, checked: at most ``limit`` (PromptTooLong), each an
        integer in the vocabulary (InvalidArgument). Returns them as a list of ints."""
        if len(tokens) > limit:
            raise errors.PromptTooLong(f"{what} is {len(tokens):,} tokens; the context holds "
                                       f"{limit:,}")
        for index, token in enumerate(tokens):
            if isinstance(token, bool) or not self.valid_token(token):
                raise errors.InvalidArgument(
                    f"{what}'s token {index} ({token!r}) is not a token id of this model: ids "
                    f"are integers in [0, {self._n_vocab})")
        return [int(token) for token in tokens]

    def prompt_tokens(self, prompt: str | Sequence[int], limit: int) -> list[int]:
        """A prompt's tokens: text is bounded first (check_fits: PromptTooLong without
        tokenizing) then tokenized with BOS and special tokens parsed; token ids are checked
        (check_tokens) and kept as they are."""
        if isinstance(prompt, str):
            self.check_fits(prompt, limit)
            return self.tokenize(prompt, add_special=True, parse_special=True)
        return self.check_tokens(prompt, limit)

    def tokenize(self, text: str | bytes, *, add_special: bool,
                 parse_special: bool) -> list[int]:
        """Text -> token ids. Bytes must be UTF-8 (llama.cpp throws, i.e. aborts, otherwise)."""
        if isinstance(text, str):
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise errors.InvalidEncoding(f"text is not encodable as UTF-8: {exc}") from exc
        elif isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise errors.InvalidEncoding(f"text is not valid UTF-8: {exc}") from exc
        else:
            raise errors.InvalidArgument(f"text must be str or bytes, not {type(text).__name__}")
        if len(data) > _MAX_TEXT_BYTES:
            raise errors.InvalidArgument(f"text too long to tokenize: {len(data)} bytes")
        vocab = self.vocab_handle
        capacity = len(data) + 8
        while True:
            buf = (C.llama_token * capacity)()
            count = C.llama_tokenize(vocab, data, len(data), buf, capacity,
                                     bool(add_special), bool(parse_special))
            if count >= 0:
                return buf[:count]
            if count == -(1 << 31):
                raise errors.InvalidArgument("tokenization overflowed int32")
            capacity = -count

    def check_fits(self, text: str, limit: int, what: str = "the prompt") -> None:
        """PromptTooLong at once when ``text`` makes more than ``limit`` tokens whatever they
        are (token_bound.py): tokenizing it would cost time (quadratic for byte-fallback text)
        to learn what its size already says. Cheap: one regex pass, no tokenizing."""
        if len(text) <= limit:
            return   # the bound below never exceeds the text's length in characters
        bound = self._token_bound
        if bound is None:
            bound = self._token_bound = TokenBound(self)
        n_bytes = len(text.encode("utf-8", "surrogatepass"))
        fewest = bound.min_tokens(text, n_bytes, limit)
        if fewest > limit:
            raise errors.PromptTooLong(
                f"{what} is {n_bytes:,} bytes, at least {fewest:,} tokens; the context holds "
                f"{limit:,}")

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character). Cached."""
        cache = self._pieces[1 if special else 0]
        piece = cache.get(token)
        if piece is not None:
            return piece
        token = self._check_token(token)
        vocab = self.vocab_handle
        size = 32
        while True:
            buf = ctypes.create_string_buffer(size)
            count = C.llama_token_to_piece(vocab, token, buf, size, 0, bool(special))
            if count >= 0:
                piece = buf.raw[:count]
                cache[token] = piece
                return piece
            size = -count

    def detokenize(self, tokens: Iterable[int], *, special: bool = False) -> str:
        data = b"".join(self.token_to_piece(t, special=special) for t in tokens)
        return data.decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        eog = self._eog_set
        if eog is None:  # once: one set lookup per sampled token after that
            eog = self._eog_set = frozenset(self.eog_tokens())
        return token in eog

    def eog_tokens(self) -> tuple[int, ...]:
        """Every end-of-generation token in the vocabulary (computed once)."""
        if self._eog is None:
            vocab = self.vocab_handle
            self._eog = tuple(t for t in range(self._n_vocab) if C.llama_vocab_is_eog(vocab, t))
        return self._eog

    def token_text(self, token: int) -> str:
        """The vocabulary's text for a token (e.g. '<s>'), as chat templates expect it."""
        token = self._check_token(token)
        raw = C.llama_vocab_get_text(self.vocab_handle, token)
        return (raw or b"").decode("utf-8", errors="replace")

    # --- chat ----------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        raw = C.llama_model_chat_template(self.handle, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def render_chat(self, messages: Sequence[Mapping[str, object]], *,
                    add_generation_prompt: bool = True, template: str | None = None,
                    tools: Sequence[Mapping[str, object]] | None = None) -> str:
        """Render messages (and ``tools``, given to the template as transformers does) with
        ``template``, else the model's template, else ChatML."""
        bos = self.token_text(self.bos_token) if self.valid_token(self.bos_token) else ""
        eos = self.token_text(self.eos_token) if self.valid_token(self.eos_token) else ""
        return render_template(template or self.chat_template, messages,
                               add_generation_prompt=add_generation_prompt,
                               bos_token=bos, eos_token=eos, tools=tools)
