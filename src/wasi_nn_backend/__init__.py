"""wasi-nn-backend: the WASI-NN API for llama.cpp GGUF models, for many concurrent sessions.

Layering (imports point one way; a test enforces it):
    adapters -> wasi_nn / backend -> engine -> {core, llm};  errors and config anywhere.
Only llm/ imports llama_cpp. This module only re-exports.
"""
from .api.backend import Backend, BackendStats, Graph
from .config import Config, RequestParams, parse_config
from .core.clock import MonotonicClock
from .core.request import Completion, FinishReason
from .engine.clock import FakeClock
from .engine.streams import EndOfStream, Stream
from .errors import ErrorCode, WasiNnError
from .api.session import Session

__all__ = ["Backend", "BackendStats", "Completion", "Config", "EndOfStream", "ErrorCode",
           "FakeClock", "FinishReason", "Graph", "MonotonicClock", "RequestParams", "Session",
           "Stream", "WasiNnError", "parse_config"]
