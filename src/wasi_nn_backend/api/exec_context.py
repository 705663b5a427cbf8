"""The WASI-NN execution-context flow on a Session: set_input -> compute -> get_output, and the
streaming calls compute_single -> get_output_single -> fini_single (WasmEdge semantics).

Index 0 of set_input is the prompt (UTF-8 bytes), index 1 metadata JSON (this context's
settings). Index 0 of get_output is the generated text, index 1 a usage JSON: token counts,
llama.cpp build facts (WasmEdge's keys) and ``model``, what the context runs on.
On a graph loaded with ``embedding: true``, compute embeds the prompt and index 0 is
WasmEdge's embedding JSON.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from ..core.request import Completion
from ..engine.streams import Stream
from ..errors import EndOfSequence, InvalidArgument, InvalidEncoding, WasiNnError
from .session import Session


class ContextIO:
    def __init__(self, session: Session, build_info: dict[str, Any]) -> None:
        self.session = session
        self._build_info = build_info
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
        except StopIteration:
            completion = stream.result()
            with self._lock:
                self._completion, self._last_piece = completion, b""
            _raise_for(completion)
            raise EndOfSequence("the generation has ended") from None
        with self._lock:
            self._last_piece = piece.encode("utf-8")
            self._text += self._last_piece

    def record(self, completion: Completion, text: bytes) -> None:
        """A chat turn run_inference delivered: get_output reads its text and usage."""
        with self._lock:
            self._completion, self._text = completion, text
            self._prompt_tokens = completion.prompt_tokens

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
        usage.update(self._build_info)
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
