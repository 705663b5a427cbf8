"""ExecutionContext: the WASI-NN execution-context flow on a Session: set_input -> compute ->
get_output, the streaming calls compute_single -> get_output_single -> fini_single (WasmEdge
semantics), and the original's run_inference (a chat turn). The Backend makes one per session
(Backend.context) and forgets it with the session; every edge that speaks WASI-NN (the function
API, the wasm imports) calls it and translates its exceptions at its own border.

Index 0 of set_input is the prompt (UTF-8 bytes), index 1 metadata JSON (this context's
settings). Index 0 of get_output is the generated text, index 1 a usage JSON: token counts,
llama.cpp build facts (WasmEdge's keys) and ``model``, what the context runs on.
On a graph loaded with ``embedding: true``, compute embeds the prompt and index 0 is
WasmEdge's embedding JSON.
"""
from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

from ..core.request import Completion
from ..engine.streams import EndOfStream, Stream
from ..errors import EndOfSequence, InvalidArgument, InvalidEncoding, WasiNnError
from ..llm.lib import build_info
from .session import Session

USAGE_BUILD_KEYS = ("llama_build_number", "llama_commit", "llama_version", "llama_cpp_python",
                    "ggml_version", "ggml_commit")


@functools.cache
def usage_build_facts() -> dict[str, Any]:
    """The llama.cpp build facts every usage JSON carries (as WasmEdge's does)."""
    info = build_info()
    return {key: info[key] for key in USAGE_BUILD_KEYS if key in info}


class ExecutionContext:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._prompt: str | None = None
        self._prompt_tokens = 0
        self._text = b""
        self._completion: Completion | None = None
        self._stream: Stream | None = None
        self._last_piece = b""
        self._lock = threading.Lock()

    def set_input(self, index: int, data: bytes) -> None:
        if index == 0:
            self.fini_single()  # a new prompt starts a new stream
            try:
                prompt = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidEncoding(f"the prompt is not UTF-8: {error}") from None
            tokens = self.session.tokenize_prompt(prompt)
            with self._lock:
                self._prompt, self._prompt_tokens = prompt, len(tokens)
        elif index == 1:
            self.session.set_context_overrides(bytes(data))
        else:
            raise InvalidArgument(f"input index {index} does not exist (0 = prompt, 1 = metadata)")

    def compute(self) -> None:
        """Generate for the prompt set; raises ContextFull / Timeout with the output readable."""
        prompt = self._require_prompt()
        self.fini_single()
        if self.session.loaded.config.model.embedding:
            text = embedding_json(self.session.embed(prompt))
            with self._lock:
                self._completion, self._text = None, text
            return
        completion = self.session.complete(prompt)
        with self._lock:
            self._completion, self._text = completion, completion.text.encode("utf-8")
        _raise_for(completion)

    def compute_single(self) -> None:
        """One more piece of output; EndOfSequence when the generation has ended."""
        with self._lock:  # one stream even if two threads start it at once
            stream = self._stream
            if stream is None:
                if self._prompt is None:
                    raise InvalidArgument("no input is set: call set_input(index 0) first")
                stream = self.session.complete_stream(self._prompt)
                self._stream, self._completion, self._text = stream, None, b""
        try:
            piece = stream.get()
        except EndOfStream:
            completion = stream.result()
            with self._lock:
                self._completion, self._last_piece = completion, b""
            _raise_for(completion)
            raise EndOfSequence("the generation has ended") from None
        with self._lock:
            self._last_piece = piece.encode("utf-8")
            self._text += self._last_piece

    def run_inference(self, message: bytes, overrides: str | bytes | None,
                      deliver: Callable[[bytes], None]) -> Completion:
        """The original's chat call: ``message`` (UTF-8) is the user's turn; ``deliver`` gets
        the reply's bytes before the turn joins the history, and if it raises (the caller's
        buffer is too small) the turn leaves no trace and the error propagates. Then
        get_output reads this request's text (index 0) and usage (index 1). A reply cut short
        (context full, timeout, closed) is delivered and returned: completion.error() says."""
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidArgument(f"the message is not UTF-8: {error}") from None

        def record(completion: Completion) -> None:
            reply = completion.text.encode("utf-8")
            deliver(reply)
            with self._lock:
                self._completion, self._text = completion, reply
                self._prompt_tokens = completion.prompt_tokens

        return self.session.chat(text, overrides or None, deliver=record)

    def fini_single(self) -> None:
        with self._lock:
            stream, self._stream, self._last_piece = self._stream, None, b""
        if stream is not None and not stream.done:
            stream.cancel()
            try:
                stream.result()
            except WasiNnError:
                pass

    def output(self, index: int) -> bytes:
        with self._lock:
            if index == 0:
                return self._text
            if index == 1:
                return self._usage()
        raise InvalidArgument(f"output index {index} does not exist (0 = text, 1 = usage)")

    def output_single(self, index: int) -> bytes:
        with self._lock:
            if index == 0:
                return self._last_piece
            if index == 1:
                return self._usage()
        raise InvalidArgument(f"output index {index} does not exist (0 = piece, 1 = usage)")

    def _require_prompt(self) -> str:
        with self._lock:
            if self._prompt is None:
                raise InvalidArgument("no input is set: call set_input(index 0) first")
            return self._prompt

    def _usage(self) -> bytes:
        usage: dict[str, Any] = {"input_tokens": self._prompt_tokens, "output_tokens": 0}
        if self._completion is not None:
            usage.update(self._completion.usage())
            if self._completion.probs:
                usage["probs"] = [[{"token": t, "prob": p} for t, p in row]
                                  for row in self._completion.probs]
        elif self._stream is not None:
            usage["output_tokens"] = None  # still generating
        usage.update(usage_build_facts())
        usage["model"] = self.session.loaded.usage_facts()   # the model this context runs on
        return json.dumps(usage).encode("utf-8")


def embedding_json(vector: list) -> bytes:
    """WasmEdge's GGML embedding output, byte for byte: ``{"n_embedding": N, "embedding":
    [v0,v1,...]}`` with each value as fmt's ``{:.10}`` writes it (printf's %.10g, Python's
    ``.10g``: 1.0 is "1"). With pooling none (a list of per-token vectors) ``embedding`` is a
    list of vectors and ``n_tokens`` their count: WasmEdge has no per-token output."""
    if vector and isinstance(vector[0], list):
        rows = ",".join("[" + ",".join(format(v, ".10g") for v in row) + "]" for row in vector)
        return (f'{{"n_embedding": {len(vector[0])}, "n_tokens": {len(vector)}, '
                f'"embedding": [{rows}]}}').encode()
    values = ",".join(format(v, ".10g") for v in vector)
    return f'{{"n_embedding": {len(vector)}, "embedding": [{values}]}}'.encode()


def _raise_for(completion: Completion) -> None:
    error = completion.error()
    if error is not None:
        raise error
