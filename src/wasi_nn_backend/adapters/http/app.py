"""create_app: the Starlette application serving a Backend's graphs under OpenAI's API.

    app = create_app(backend, {"tiny": graph}, api_key="k")
    uvicorn.run(app, host="127.0.0.1", port=8080)

Routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models[/{model}],
llama-server's /tokenize and /detokenize, /server/stats (this server's request and disconnect counts with backend.stats()), and
observe.py's /health, /metrics, /slots. Errors are OpenAI's error object (errors.py).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...api import Backend, Graph
from ...errors import WasiNnError
from . import observe
from .auth import ApiKeyMiddleware
from .errors import ApiError, error_response
from .generation import Counters, ServedModel
from .handlers import Handlers
from .pool import SessionPool


def create_app(backend: Backend, models: dict[str, Graph], *, api_key: str | None = None,
               pool_size: int | None = None) -> Starlette:
    """``models``: alias -> graph. ``pool_size``: sessions kept per model (default: the
    backend's max_sessions shared out among the models)."""
    size = pool_size or max(1, backend.config.backend.max_sessions // max(1, len(models)))
    now = int(time.time())
    served = {alias: ServedModel(alias, graph, SessionPool(graph, size), now)
              for alias, graph in models.items()}
    counters = Counters()
    handlers = Handlers(served, counters)

    async def stats(request: Request) -> Response:
        return JSONResponse({**dataclasses.asdict(counters),
                             "backend": dataclasses.asdict(backend.stats())})

    routes = [
        Route("/v1/chat/completions", handlers.chat, methods=["POST"]),
        Route("/v1/completions", handlers.completions, methods=["POST"]),
        Route("/v1/embeddings", handlers.embeddings, methods=["POST"]),
        Route("/v1/models", handlers.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", handlers.get_model, methods=["GET"]),
        Route("/tokenize", handlers.tokenize, methods=["POST"]),
        Route("/detokenize", handlers.detokenize, methods=["POST"]),
        Route("/server/stats", stats, methods=["GET"]),
        *observe.routes(backend, models),
    ]
    middleware = [Middleware(ApiKeyMiddleware, api_key=api_key)] if api_key else []
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers=_exception_handlers())


def _exception_handlers() -> dict[Any, Any]:
    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, (ApiError, WasiNnError))
        return error_response(error)

    async def http_error(request: Request, error: Exception) -> Response:
        status = getattr(error, "status_code", 500)
        return error_response(ApiError(status, str(getattr(error, "detail", error)), None,
                                       "not_found" if status == 404 else None))

    async def internal(request: Request, error: Exception) -> Response:
        return error_response(ApiError(500, f"internal error: {type(error).__name__}: "
                                       f"{error}", None, "internal_error"))
    return {ApiError: api_error, WasiNnError: api_error, HTTPException: http_error,
            Exception: internal}
