"""wasi-nn-backend: the WASI-NN API for llama.cpp GGUF models, for many concurrent sessions.

Layering (imports point one way; tests/test_layers.py enforces it, docs/DESIGN.md explains it):
    edges (wasi_nn/, adapters/) -> api -> engine -> {core, llm};  errors, config, logs anywhere.
Only llm/ imports llama_cpp. This module only re-exports.
"""
from .api import (Backend, BackendStats, Completion, EndOfStream, FakeClock, FinishReason, Graph,
                  MonotonicClock, ReadySet, Session, Stream)
from .config import Config, RequestParams, parse_config
from .errors import ErrorCode, WasiNnError

__all__ = ["Backend", "BackendStats", "Completion", "Config", "EndOfStream", "ErrorCode",
           "FakeClock", "FinishReason", "Graph", "MonotonicClock", "RequestParams", "Session",
           "ReadySet", "Stream", "WasiNnError", "parse_config"]
