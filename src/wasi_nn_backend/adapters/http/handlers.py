"""The OpenAI endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Chat requests are rendered with the model's own chat template into one prompt and run as a
completion of it on the pooled session sharing the longest prefix (pool.py): the server keeps
no history, the client sends the whole conversation every turn. Tool calls: tools.py.
"""
from __future__ import annotations

import base64
import functools
import struct
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...api import Completion
from ...errors import WasiNnError
from . import generation
from .errors import ApiError, from_wasi_nn
from .generation import Counters, ServedModel, Shape
from .requests import (MAX_TOKENIZE, chat_request, completion_request, detokenize_request,
                       embedding_request, parse_json, tokenize_request)
from .tool_replies import Reply, ToolStream, read_reply
from .tools import Tools, constrain, is_native, render
from .usage import Rows, chat_logprobs, completion_logprobs, finish_reason


class Handlers:
    def __init__(self, models: dict[str, ServedModel], counters: Counters) -> None:
        self.models = models
        self.counters = counters

    def _model(self, alias: str) -> ServedModel:
        served = self.models.get(alias)
        if served is None:
            raise ApiError(404, f"the model {alias!r} does not exist; this server has "
                           f"{', '.join(sorted(self.models))}", "model", "model_not_found")
        return served

    async def _body(self, request: Request) -> dict[str, Any]:
        return parse_json(await request.body())

    async def chat(self, request: Request) -> Response:
        body = await self._body(request)
        served = self._model(body.get("model") if isinstance(body.get("model"), str) else "")
        gen = chat_request(body, served.graph.defaults)
        graph = served.graph
        native = is_native(graph.config.model.chat_template or graph.model.chat_template,
                           gen.tools, gen.overrides)
        held = constrain(gen.overrides, gen.tools, native)
        calls = ToolStream(gen.tools, held) if gen.tools is not None and gen.stream else None

        def choice(text: str | None, done: Completion | None, stream: bool, rows: Rows,
                   offset: int) -> dict[str, Any]:
            result: dict[str, Any] = {"index": 0, "finish_reason": None}
            reply = None
            if gen.tools is not None and done is not None:   # the end: read for calls
                reply = calls.finish() if calls is not None else read_reply(
                    text or "", gen.tools, held)
                text = reply.content
            elif calls is not None and text is not None:
                text = calls.feed(text)
            legacy = gen.tools is not None and gen.tools.legacy
            content = _message(text, reply, stream, legacy) \
                if text is not None or (reply and reply.calls) else {}
            result["delta" if stream else "message"] = content
            if done is not None:
                result["finish_reason"] = finish_reason(done) if not (reply and reply.calls) \
                    else "function_call" if legacy else "tool_calls"
            result["logprobs"] = chat_logprobs(rows, served.piece) \
                if gen.top_logprobs and (rows or done is not None) else None
            return result
        shape = Shape("chat.completion", "chat.completion.chunk", choice)
        # rendered on the worker thread that picks the session: one hop off the event loop
        return await generation.run(served, request, gen,
                                    functools.partial(_render, served, gen.messages, gen.tools,
                                                      native), shape,
                                    self.counters)

    async def completions(self, request: Request) -> Response:
        body = await self._body(request)
        served = self._model(body.get("model") if isinstance(body.get("model"), str) else "")
        gen = completion_request(body, served.graph.defaults)
        # echo: the prompt's text before the completion's, once (a stream's first chunk)
        echo = [gen.prompt if isinstance(gen.prompt, str) else served.text(gen.prompt)] \
            if gen.echo else []

        def choice(text: str | None, done: Completion | None, stream: bool, rows: Rows,
                   offset: int) -> dict[str, Any]:
            prompt = echo.pop() if echo and (text is not None or done is not None) else ""
            result: dict[str, Any] = {"index": 0, "text": prompt + (text or ""),
                                      "finish_reason": None, "logprobs": None}
            if done is not None:
                result["finish_reason"] = finish_reason(done)
            if gen.top_logprobs and (rows or done is not None):
                result["logprobs"] = completion_logprobs(rows, served.piece, offset)
            return result
        shape = Shape("text_completion", "text_completion", choice)
        return await generation.run(served, request, gen, gen.prompt, shape, self.counters)

    async def embeddings(self, request: Request) -> Response:
        body = await self._body(request)
        alias, texts, encoding = embedding_request(body)
        served = self._model(alias)
        vectors, tokens = await run_in_threadpool(_embed, served, texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": _encode(vector, encoding)} for i, vector in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": alias,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _named_or_only(self, body: dict[str, Any]) -> ServedModel:
        """The model the body names; without a name, the only one served (llama-server's
        /tokenize has no model field)."""
        alias = body.get("model")
        if alias is None and len(self.models) == 1:
            return next(iter(self.models.values()))
        return self._model(alias if isinstance(alias, str) else "")

    async def tokenize(self, request: Request) -> Response:
        """llama-server's POST /tokenize: {"content", "add_special" (false),
        "parse_special" (true), "with_pieces" (false)} -> {"tokens"}; the ids a
        /v1/completions prompt may be given as."""
        body = await self._body(request)
        served = self._named_or_only(body)
        content, options = tokenize_request(body)
        model = served.graph.model
        try:
            model.check_fits(content, MAX_TOKENIZE, "the content")
            tokens = await run_in_threadpool(model.tokenize, content, **options["flags"])
        except WasiNnError as error:
            raise from_wasi_nn(error, "content") from None
        if options["with_pieces"]:   # a piece that is not whole UTF-8: its bytes, as a list
            return JSONResponse({"tokens": [{"id": t, "piece": _piece(model, t)}
                                            for t in tokens]})
        return JSONResponse({"tokens": tokens})

    async def detokenize(self, request: Request) -> Response:
        """llama-server's POST /detokenize: {"tokens"} -> {"content"}."""
        body = await self._body(request)
        served = self._named_or_only(body)
        tokens = detokenize_request(body, served.graph.model.n_vocab)
        return JSONResponse({"content": served.text(tokens, special=True)})

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            _model_card(served) for served in self.models.values()]})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(_model_card(self._model(request.path_params["model"])))


def _piece(model: Any, token: int) -> str | list[int]:
    data = model.token_to_piece(token, special=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)


def _model_card(served: ServedModel) -> dict[str, Any]:
    info = served.graph.info()
    meta = {k: info.get(k) for k in ("architecture", "n_params", "n_ctx", "n_ctx_train",
                                      "n_vocab", "quantization", "embedding")}
    return {"id": served.alias, "object": "model", "created": served.created,
            "owned_by": "wasi-nn-backend", "meta": meta}


def _message(text: str | None, reply: Reply | None, stream: bool,
             legacy: bool) -> dict[str, Any]:
    """A chat reply's message (or a stream's delta): its text, and its calls at the end (a
    delta's numbered); ``legacy``: the one call as ``function_call`` (asked as
    ``functions``)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reply is not None and reply.calls:
        if legacy:
            message["function_call"] = reply.calls[0]["function"]
        else:
            message["tool_calls"] = reply.calls if not stream else [
                {"index": i, **call} for i, call in enumerate(reply.calls)]
        if stream and text is None:
            del message["content"]
    return message


def _render(served: ServedModel, messages: list[dict[str, Any]], tools: Tools | None,
            native: bool) -> str:
    """The conversation in the model's chat template (with the tools: tools.render), ready
    for the reply. A BOS the template writes is left out: tokenizing the prompt adds it (as
    llama-server does)."""
    graph = served.graph

    def chat(variant: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return graph.model.render_chat(variant, add_generation_prompt=True,
                                       template=graph.config.model.chat_template, tools=tools)
    try:
        text = render(chat, messages, tools, native)
    except WasiNnError as error:
        raise from_wasi_nn(error, "messages") from None
    except Exception as error:   # jinja2 errors: the template refused these messages
        raise ApiError(400, f"the chat template failed on these messages: {error}",
                       "messages", "invalid_value") from None
    model = graph.model
    if model.bos_token >= 0:
        bos = model.token_to_piece(model.bos_token, special=True).decode("utf-8", "replace")
        if bos and text.startswith(bos):
            text = text[len(bos):]
    return text


def _embed(served: ServedModel, texts: list[str]) -> tuple[list[list[float]], int]:
    """Vectors of ``texts`` on an idle pooled session; the tokens they took."""
    entry = served.pool.acquire([])
    try:
        session = entry.session
        tokens = sum(len(session.tokenize_prompt(t, limit=None)) for t in texts)
        return session.embed(texts), tokens
    except WasiNnError as error:
        raise from_wasi_nn(error, "input") from None
    finally:
        served.pool.release(entry)


def _encode(vector: list[float], encoding: str) -> Any:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
