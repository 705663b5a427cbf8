"""Running one chat or completion request on a pooled session, streamed (SSE) or whole.

The blocking part (tokenizing, picking and maybe opening a session, submitting) runs in the
thread pool; the waiting happens on the event loop (watch.py). Chat and completions differ
only in their prompt and in the JSON they answer with (a Shape).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ...api import Completion, Graph, Piece, Stream
from ...errors import ErrorCode, WasiNnError
from .errors import ApiError, error_json, from_wasi_nn
from .pool import Entry, SessionPool
from .requests import GenerationRequest
from .usage import Rows, token_rows, usage
from .watch import Watch


@dataclass
class ServedModel:
    alias: str
    graph: Graph
    pool: SessionPool
    created: int

    def piece(self, token: int) -> str:
        return self.graph.model.token_to_piece(token).decode("utf-8", "replace")

    def text(self, tokens: list[int], *, special: bool = False) -> str:
        """The text of ``tokens``, their bytes joined first (a character split across tokens
        stays whole); ``special``: special tokens written out (llama-server's /detokenize)."""
        return self.graph.model.detokenize(tokens, special=special)


@dataclass
class Shape:
    """How one endpoint words its answers."""

    object: str                    # "chat.completion" / "text_completion"
    chunk_object: str
    choice: Callable[[str | None, Completion | None, bool, Rows, int], dict[str, Any]]
    # choice(text or piece, the completion at the end or None, streaming?, the tokens with
    # their probabilities that this text completes, where this text starts in the whole)


@dataclass
class Counters:
    """The server's own counts (GET /server/stats): requests and client disconnects."""

    requests: int = 0
    cancelled: int = 0     # generations stopped because their client went away


Prompt = str | list[int] | Callable[[], str]   # text, token ids, or what renders the text


def _start(served: ServedModel, prompt: Prompt, overrides: dict[str, Any],
           key: str | None) -> tuple[Entry, Stream]:
    """Tokenize the prompt once (its tokens pick the session, then go to it as they are),
    pick a session and submit. An over-long text is refused before it is tokenized."""
    if callable(prompt):
        prompt = prompt()
    graph = served.graph
    # token ids are checked before a session is taken for them (a full pool gives one up)
    tokens = graph.model.prompt_tokens(prompt, graph.config.model.n_ctx - 1)
    entry = served.pool.acquire(tokens, key)
    try:
        return entry, entry.session.complete_stream(tokens, overrides)
    except BaseException:
        served.pool.release(entry)
        raise


async def run(served: ServedModel, request: Request, gen: GenerationRequest,
              prompt: Prompt, shape: Shape, counters: Counters) -> Response:
    key = request.headers.get("x-session-affinity") or gen.user
    counters.requests += 1
    try:
        entry, stream = await run_in_threadpool(_start, served, prompt, gen.overrides, key)
    except WasiNnError as error:
        raise from_wasi_nn(error, "prompt" if isinstance(prompt, list) else None) from None
    watch = Watch(stream, lambda: served.pool.release(entry))
    ident = f"{'chatcmpl' if shape.object == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"
    head = {"id": ident, "created": int(time.time()), "model": served.alias}
    if gen.stream:
        pieces = watch.pieces()
        first = await _first(watch, pieces)
        return StreamingResponse(_events(watch, pieces, first, head, shape, gen, counters,
                                         served.piece),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    completion = await watch.result(request)
    if completion is None:
        counters.cancelled += 1
        return Response(status_code=499)   # nobody reads it: the client is gone
    _check(completion)
    return JSONResponse({**head, "object": shape.object,
                         "choices": [shape.choice(completion.text, completion, False,
                                                  token_rows(completion), 0)],
                         "usage": usage(completion)})


def _check(completion: Completion) -> None:
    """A completion cut short by its deadline (or closed) is an error; a full context is
    finish_reason "length", the text kept."""
    error = completion.error()
    if error is not None and error.code is not ErrorCode.CONTEXT_FULL:
        raise from_wasi_nn(error)


async def _first(watch: Watch, pieces: AsyncIterator[Piece]) -> Piece | None:
    """The first piece, before the response starts: a request that fails before it (its
    deadline, the engine stopping) answers with its own status, not a 200 and an error
    event. None when the stream ended without one."""
    try:
        return await pieces.__anext__()
    except StopAsyncIteration:
        assert watch.end is not None
        if watch.end.error is not None:
            raise from_wasi_nn(watch.end.error) from None
        return None
    except asyncio.CancelledError:
        watch.cancel()
        raise


async def _events(watch: Watch, pieces: AsyncIterator[Piece], first: Piece | None,
                  head: dict[str, Any], shape: Shape, gen: GenerationRequest,
                  counters: Counters, served_piece: Callable[[int], str]
                  ) -> AsyncIterator[str]:
    """The chunks: one a piece (with the logprobs of the tokens it completes), then the end
    (finish_reason, the logprobs of tokens no piece carried, usage)."""
    chunk = {**head, "object": shape.chunk_object}
    finished = False
    covered, offset = 0, 0     # tokens the chunks carried so far; where the next one starts

    def event(piece: Piece) -> str:
        nonlocal covered, offset
        rows = list(piece.tokens)
        data = _sse({**chunk, "choices": [shape.choice(piece.text, None, True, rows, offset)]})
        covered += len(rows)
        # text_offset counts the tokens' own text, as the whole reply's logprobs do (a
        # piece may show less: a possible stop string held back)
        offset += sum(len(served_piece(token)) for token, _ in rows)
        return data
    try:
        if first is not None:
            yield event(first)
        async for piece in pieces:
            yield event(piece)
        assert watch.end is not None
        try:
            completion = watch.end.result()
            _check(completion)
        except WasiNnError as error:
            finished = True
            yield f"data: {error_json(from_wasi_nn(error))}\n\n"
            return
        except ApiError as error:
            finished = True
            yield f"data: {error_json(error)}\n\n"
            return
        rest = token_rows(completion)[covered:]
        final = {**chunk, "choices": [shape.choice(None, completion, True, rest, offset)],
                 "usage": usage(completion)}
        yield _sse(final)
        if gen.include_usage:
            yield _sse({**chunk, "choices": [], "usage": usage(completion)})
        finished = True
        yield "data: [DONE]\n\n"
    finally:
        if not finished and not watch.stream.done:   # the client went away mid-stream
            counters.cancelled += 1
            watch.cancel()


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
