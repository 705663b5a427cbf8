"""Error codes and the exception for each.

Inside the package every failure is an exception of the class for its code; the function
API (wasi_nn/) and the adapters turn them into numbers, each at its own border. Two
numberings exist:

* ``ErrorCode`` values are the original C header's (``wasi_nn_llama.h``), used by the Python
  function API and by Erlang: success=0 ... unknown=9, end_of_sequence=100 ... model_not_found=103.
  ``busy`` is ours (the header has none): 10.
* ``witx_code()`` gives the ``nn_errno`` number that WebAssembly guests read
  (``wasi_ephemeral_nn``: busy=4, runtime_error=5, ..., not_found=8).
"""
from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_ENCODING = 2
    TIMEOUT = 3
    RUNTIME_ERROR = 4
    UNSUPPORTED_OPERATION = 5
    TOO_LARGE = 6
    NOT_FOUND = 7
    SECURITY = 8
    UNKNOWN = 9
    BUSY = 10
    END_OF_SEQUENCE = 100
    CONTEXT_FULL = 101
    PROMPT_TOO_LONG = 102
    MODEL_NOT_FOUND = 103


# witx nn_errno: 0 success, 1 invalid_argument, 2 invalid_encoding, 3 missing_memory, 4 busy,
# 5 runtime_error, 6 unsupported_operation, 7 too_large, 8 not_found, 100.. as ours.
# Codes the witx enum lacks (timeout, security, unknown) read as runtime_error there.
_WITX = {
    ErrorCode.SUCCESS: 0,
    ErrorCode.INVALID_ARGUMENT: 1,
    ErrorCode.INVALID_ENCODING: 2,
    ErrorCode.BUSY: 4,
    ErrorCode.RUNTIME_ERROR: 5,
    ErrorCode.TIMEOUT: 5,
    ErrorCode.SECURITY: 5,
    ErrorCode.UNKNOWN: 5,
    ErrorCode.UNSUPPORTED_OPERATION: 6,
    ErrorCode.TOO_LARGE: 7,
    ErrorCode.NOT_FOUND: 8,
    ErrorCode.END_OF_SEQUENCE: 100,
    ErrorCode.CONTEXT_FULL: 101,
    ErrorCode.PROMPT_TOO_LONG: 102,
    ErrorCode.MODEL_NOT_FOUND: 103,
}


def witx_code(code: ErrorCode) -> int:
    """The ``nn_errno`` value a wasm guest reads for ``code``."""
    return _WITX[ErrorCode(code)]


class WasiNnError(Exception):
    """Base of every error the package raises on purpose; ``code`` says which."""

    code: ErrorCode = ErrorCode.UNKNOWN

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__


class InvalidArgument(WasiNnError):
    """Raised when a value is missing, of the wrong type or out of range, or a handle is None."""

    code = ErrorCode.INVALID_ARGUMENT


class InvalidEncoding(WasiNnError):
    """Raised when bytes cannot be read as what they must be: malformed JSON, a file that is not
    GGUF, a prompt that is not UTF-8."""

    code = ErrorCode.INVALID_ENCODING


class Timeout(WasiNnError):
    """Raised when a request passes its deadline; any partial output stays readable."""

    code = ErrorCode.TIMEOUT


class BackendRuntimeError(WasiNnError):
    """Raised when llama.cpp fails (decode error, context creation) or a limit is hit
    (max_sessions with auto_cleanup off), or a closed backend is used."""

    code = ErrorCode.RUNTIME_ERROR


class UnsupportedOperation(WasiNnError):
    """Raised for an operation this backend does not offer (e.g. a non-GGML graph encoding)."""

    code = ErrorCode.UNSUPPORTED_OPERATION


class TooLarge(WasiNnError):
    """Raised when an output does not fit the caller's buffer, or a model does not fit the memory
    limit (memory.max_model_memory_mb); ``needed`` is the size it needs in bytes."""

    code = ErrorCode.TOO_LARGE

    def __init__(self, message: str = "", needed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed


class NotFound(WasiNnError):
    """Raised for an unknown, closed or evicted handle or session."""

    code = ErrorCode.NOT_FOUND


class Security(WasiNnError):
    """Raised when an operation is refused for safety (e.g. a guest pointer out of bounds)."""

    code = ErrorCode.SECURITY


class Unknown(WasiNnError):
    """Raised for an internal fault that fits no other code (a bug: please report it)."""

    code = ErrorCode.UNKNOWN


class Busy(WasiNnError):
    """Raised when the request queue is full (queue_reject_threshold) and a request is refused."""

    code = ErrorCode.BUSY


class EndOfSequence(WasiNnError):
    """Raised by streaming (compute_single) when generation has ended."""

    code = ErrorCode.END_OF_SEQUENCE


class ContextFull(WasiNnError):
    """Raised when a session's context is full and context shifting is off; the partial output
    stays readable."""

    code = ErrorCode.CONTEXT_FULL


class PromptTooLong(WasiNnError):
    """Raised when a prompt cannot fit the per-session context (n_ctx)."""

    code = ErrorCode.PROMPT_TOO_LONG


class ModelNotFound(WasiNnError):
    """Raised when a model file does not exist or cannot be read."""

    code = ErrorCode.MODEL_NOT_FOUND
