"""GrammarGuard: owns the llama.cpp grammar sampler of one Sampler, used only through checks
that keep llama.cpp from aborting; make_guard builds it from SamplingParams (the GBNF text and
the triggers come checked from gbnf.py), check_grammar tries that once up front.

Why a guard: llama.cpp's grammar accept throws a C++ exception through the C API (that is
std::terminate) when the grammar rejects the token, and GGML_ABORTs on an end-of-generation
token while the grammar is incomplete. So every accept here is preceded by a one-candidate
apply that tells whether the grammar allows the token.

Why lazy grammars are triggered here and not by llama.cpp: its lazy mode replays the
triggering text into the grammar inside accept, where a mismatch is again std::terminate, and
it compiles trigger patterns with std::regex, whose errors are uncaught C++ exceptions too.
So the C grammar is always created non-lazy, and this class watches the output for the
triggers (Python `re`, same rules: gbnf.trigger_start) and feeds the triggering text through
the guarded accept.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator

import llama_cpp.llama_cpp as C
import numpy as np

from .. import errors
from ..config import SamplingParams
from .gbnf import check_gbnf_text, grammar_source, trigger_regexes, trigger_start
from .lib import LLAMA_LOGGER
from .model import Model

log = logging.getLogger(__name__)

TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert TOKEN_DATA.itemsize == ctypes.sizeof(C.llama_token_data)


class GrammarRejected(errors.BackendRuntimeError):
    """Raised when the grammar allows no token (or rejects the text that triggered it);
    ``complete`` says whether the grammar had already matched a whole sentence."""

    def __init__(self, message: str, *, complete: bool) -> None:
        super().__init__(message)
        self.complete = complete


_capture_lock = threading.Lock()


class _ThreadRecords(logging.Filter):
    """Takes this thread's llama.cpp error log lines off LLAMA_LOGGER: they go into the
    InvalidArgument message instead of being logged as well."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__()
        self._sink, self._thread = sink, threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self._thread and record.levelno >= logging.ERROR:
            self._sink.append(record.getMessage().strip())
            return False
        return True


# llama_grammar_parser::parse's report on stderr (llama-grammar.cpp): the error, then the source.
_PARSE_REPORT = re.compile(rb"[^\n]*error parsing grammar: ([^\n]*)\n\n")


@contextlib.contextmanager
def _llama_diagnostics(source: bytes) -> Iterator[list[str]]:
    """Why the grammar ``source`` failed, said once: llama.cpp fprintf's the parser's error and
    the whole grammar to fd 2 and logs "failed to parse grammar" as well, so fd 2 is briefly
    redirected (serialised) and the log record held back; both become the list's lines, and
    whatever else landed on fd 2 meanwhile is written back."""
    lines: list[str] = []
    records: list[str] = []
    held = _ThreadRecords(records)
    LLAMA_LOGGER.addFilter(held)
    try:
        with _capture_lock, tempfile.TemporaryFile() as sink:
            if sys.stderr is not None:
                sys.stderr.flush()
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 (a daemon): nothing to capture
                yield lines
                lines.extend(records)
                return
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            captured = sink.read()
    finally:
        LLAMA_LOGGER.removeFilter(held)
    report = _PARSE_REPORT.search(captured)
    if report is not None:
        lines.append(report.group(1).decode("utf-8", errors="replace"))
        end = report.end()
        if captured.startswith(source, end):       # the echoed grammar: part of the report
            end += len(source) + 1
        captured = captured[:report.start()] + captured[end:]
    if captured.strip():
        os.write(2, captured)
    lines.extend(line for line in records if not lines or "failed to parse" not in line)


class GrammarGuard:
    """Owns one (non-lazy) llama.cpp grammar sampler; see the module docstring."""

    def __init__(self, model: Model, gbnf: str, *, lazy: bool = False,
                 triggers: Iterable[re.Pattern[bytes]] = (),
                 trigger_tokens: Iterable[int] = ()) -> None:
        self._model = model
        self._handle = None
        check_gbnf_text(gbnf)
        try:
            source = gbnf.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise errors.InvalidArgument(f"grammar is not valid text: {exc}") from exc
        with _llama_diagnostics(source) as diagnostics:
            self._handle = C.llama_sampler_init_grammar(model.vocab_handle, source, b"root")
        if not self._handle:
            detail = "; ".join(diagnostics) or "llama.cpp could not parse it"
            raise errors.InvalidArgument(f"invalid grammar: {detail}")
        self._lazy = bool(lazy)
        self._triggers = list(triggers)
        self._trigger_tokens = frozenset(trigger_tokens)
        self._active = not self._lazy
        self._pending = bytearray()  # lazy: output so far, searched for triggers
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        self._one_array = C.llama_token_data_array(
            data=self._one.ctypes.data_as(C.llama_token_data_p), size=1, selected=-1,
            sorted=False)

    @property
    def active(self) -> bool:
        """False while a lazy grammar waits for its trigger (it then constrains nothing)."""
        return self._active

    def apply(self, token_array: C.llama_token_data_array) -> None:
        """Set the logit of every token the grammar rejects to -inf (no-op while waiting)."""
        if self._active:
            C.llama_sampler_apply(self._live(), ctypes.byref(token_array))

    def allows(self, token: int) -> bool:
        """Whether accepting ``token`` now is safe (always, while waiting for a trigger)."""
        if not self._active:
            return True
        self._one[0] = (token, 0.0, 0.0)
        self._one_array.size, self._one_array.selected = 1, -1
        C.llama_sampler_apply(self._live(), ctypes.byref(self._one_array))
        return bool(np.isfinite(self._one[0]["logit"]))

    def is_complete(self) -> bool:
        """Whether the grammar has matched a whole sentence (it then allows EOG)."""
        eog = self._model.eog_tokens()
        return bool(eog) and self.allows(eog[0])

    def accept(self, token: int) -> None:
        """Advance the grammar by ``token``; GrammarRejected instead of a C abort."""
        if not self._active:
            self._watch(token)
            return
        if not self.allows(token):
            raise GrammarRejected(f"the grammar does not allow token {token}",
                                  complete=self.is_complete())
        C.llama_sampler_accept(self._live(), token)

    def _watch(self, token: int) -> None:
        if token in self._trigger_tokens:
            self._active = True
            self._pending.clear()
            self.accept(token)
            return
        self._pending += self._model.token_to_piece(token, special=True)
        for pattern in self._triggers:
            start = trigger_start(pattern, bytes(self._pending))
            if start >= 0:
                constrained = bytes(self._pending[start:])
                self._active = True
                self._pending.clear()
                log.debug("lazy grammar triggered by %r", constrained[:80])
                self._feed_text(constrained)
                return

    def _feed_text(self, text: bytes) -> None:
        # The grammar sees code points, so re-tokenizing the triggering text is equivalent to
        # replaying the generated pieces. A trailing partial UTF-8 character is dropped.
        tokens = self._model.tokenize(text.decode("utf-8", errors="ignore"),
                                      add_special=False, parse_special=True)
        for token in tokens:
            if not self.allows(token):
                raise GrammarRejected("the grammar rejects the text that triggered it: "
                                      f"{text[:80]!r}", complete=False)
            C.llama_sampler_accept(self._live(), token)

    def reset(self) -> None:
        C.llama_sampler_reset(self._live())
        self._active = not self._lazy
        self._pending.clear()

    def _live(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise errors.BackendRuntimeError("grammar is closed")
        return self._handle

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down C
            self.close()

    def close(self) -> None:
        """Idempotent. The grammar sampler is never added to a chain, so freeing it is ours."""
        handle, self._handle = self._handle, None
        if handle is not None:
            C.llama_sampler_free(handle)


def make_guard(model: Model, params: SamplingParams) -> GrammarGuard | None:
    """The guard for the grammar ``params`` ask for (None: no grammar); InvalidArgument for a
    bad grammar, schema or trigger."""
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
    guard = make_guard(model, params)
    if guard is not None:
        guard.close()
