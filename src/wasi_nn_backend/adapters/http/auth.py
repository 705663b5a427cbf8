"""The API key: ``Authorization: Bearer KEY`` on every route but /health, compared in constant
time (hmac.compare_digest), so that response timing says nothing about how much of a guess
was right. Pure ASGI middleware: streaming responses pass through untouched."""
from __future__ import annotations

import hmac
from typing import Any

from .errors import ApiError, error_response

OPEN_PATHS = ("/health",)


class ApiKeyMiddleware:
    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(ApiError(401, "invalid or missing API key "
                                           "(Authorization: Bearer KEY)", None,
                                           "invalid_api_key"))
        await response(scope, receive, send)

    def _allowed(self, scope: dict) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._key)
