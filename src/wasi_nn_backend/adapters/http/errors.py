"""OpenAI's error object, and the one table from the package's error codes to HTTP statuses.

Every failure a client sees is ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's
shape, which its client parses into APIStatusError subclasses), with the status from STATUS:

* busy -> 429 with Retry-After: the engine's queue is full; the same request later succeeds;
* invalid_argument, invalid_encoding, prompt_too_long -> 400: the request itself is wrong;
* unsupported_operation -> 400: asked of a model that cannot (embeddings of a text model);
* not_found, model_not_found -> 404;
* timeout -> 504: the request was valid and the server alive, but the engine did not answer
  within the request's deadline. Not 408 (that says the *client* was slow sending it) and not
  500 (nothing broke): 504 tells clients and proxies that the same request may succeed later;
* anything else -> 500.
A pool of sessions with every one busy answers 503 with Retry-After (ApiError, pool.py).
"""
from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from ...errors import ErrorCode, WasiNnError

RETRY_AFTER_S = 1

STATUS: dict[ErrorCode, int] = {
    ErrorCode.BUSY: 429,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.INVALID_ENCODING: 400,
    ErrorCode.PROMPT_TOO_LONG: 400,
    ErrorCode.UNSUPPORTED_OPERATION: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.TIMEOUT: 504,
}

# llama-server's error types (OpenAI's client reads the status, not these)
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         429: "rate_limit_error", 503: "unavailable_error", 504: "timeout_error"}


class ApiError(Exception):
    """A failure found by the server itself (a bad field, a bad key, no free session)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def from_wasi_nn(error: WasiNnError, param: str | None = None) -> ApiError:
    status = STATUS.get(error.code, 500)
    return ApiError(status, error.message, param, error.code.name.lower())


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": {"message": error.message,
                      "type": TYPES.get(error.status, "server_error"),
                      "param": error.param, "code": error.code}}


def error_json(error: ApiError) -> str:
    """The body as one line, for an SSE event when a stream fails after it began."""
    return json.dumps(error_body(error))


def error_response(error: ApiError | WasiNnError) -> JSONResponse:
    if isinstance(error, WasiNnError):
        error = from_wasi_nn(error)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if error.status in (429, 503) else None
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)
