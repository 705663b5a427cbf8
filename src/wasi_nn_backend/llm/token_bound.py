"""A lower bound on how many tokens a text makes, computed without tokenizing it.

Why: llama.cpp's SPM tokenizer is quadratic in the bytes it sends to byte fallback (each
fallback symbol ``reserve``s the output vector to its exact new size, so every one of them
copies the whole output: 64 KiB of NUL bytes cost seconds), and it runs on the caller's thread
where nothing can interrupt it. A prompt that cannot fit the context whatever its tokens are is
refused before it is tokenized, so the quadratic part is bounded by the context size.

The bound, for the vocabularies whose tokens spell the text back byte for byte (SPM, BPE):
* every token's piece has at most ``max_piece`` bytes, so a text of B bytes makes at least
  B / max_piece tokens (max_piece is at least 4: an unknown token stands for one character);
* SPM only: a character that appears in no token's text (byte tokens aside) can never be
  merged, so each one is at least one token of its own (a byte-fallback token per byte, or
  ``<unk>``). NUL bytes and other control characters are such characters in most vocabularies.
Other vocabularies (WPM drops whitespace, UGM normalizes) get no bound: 0.
"""
from __future__ import annotations

import ctypes
import re
from typing import Protocol

import llama_cpp.llama_cpp as C

_MIN_PIECE = 4  # an unknown token (<unk>) stands for one character of up to 4 bytes


class Vocabulary(Protocol):
    """What the bound reads of a model (model.Model, which builds one TokenBound for itself):
    named here so that this module does not import the model that imports it."""

    @property
    def vocab_handle(self) -> ctypes.c_void_p: ...
    @property
    def n_vocab(self) -> int: ...
    def token_to_piece(self, token: int, *, special: bool = False) -> bytes: ...


class TokenBound:
    """Built once per model from its vocabulary (one pass over the token pieces)."""

    def __init__(self, model: Vocabulary) -> None:
        vocab = model.vocab_handle
        kind = int(C.llama_vocab_type(vocab))
        self.enabled = kind in (C.LLAMA_VOCAB_TYPE_SPM, C.LLAMA_VOCAB_TYPE_BPE)
        self.max_piece = _MIN_PIECE
        self._lonely: re.Pattern[str] | None = None
        if not self.enabled:
            return
        chars: set[str] = set()
        for token in range(model.n_vocab):
            piece = model.token_to_piece(token, special=True)
            self.max_piece = max(self.max_piece, len(piece))
            if kind == C.LLAMA_VOCAB_TYPE_SPM and not (
                    int(C.llama_vocab_get_attr(vocab, token)) & C.LLAMA_TOKEN_ATTR_BYTE):
                chars.update(piece.decode("utf-8", "ignore"))
        if kind == C.LLAMA_VOCAB_TYPE_SPM:
            chars.add(" ")  # spelled "\u2581" in the vocabulary, a space in its pieces
            # Every character NOT in a token: one regex class over the ones that are.
            covered = "".join(sorted(re.escape(c) for c in chars))
            self._lonely = re.compile(f"[^{covered}]+" if covered else "(?s:.+)")

    def min_tokens(self, text: str, n_bytes: int, limit: int) -> int:
        """At least this many tokens come of ``text`` (``n_bytes`` long in UTF-8); the cheap
        part of the bound alone once it passes ``limit``."""
        if not self.enabled:
            return 0
        bound = n_bytes // self.max_piece
        if self._lonely is not None and bound <= limit:
            bound = max(bound, len(text) - len(self._lonely.sub("", text)))  # all in C
        return bound
