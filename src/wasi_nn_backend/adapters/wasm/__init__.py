"""The wasmtime host: real WebAssembly guests calling the ``wasi_ephemeral_nn`` imports.

``NnHost`` owns one backend that every guest run through it shares; ``run_guest`` runs one
WASI command against it. Layout: ``memory`` (bounds-checked guest memory), ``names`` (preload
aliases, allowed directories), ``imports`` (the twelve imports), ``outputs`` (whole outputs,
WasmEdge's ``stream-stdout``), ``deadline`` (the operator's time limits, which a guest cannot
lift), ``runtime`` (wasmtime Engine, epoch ticker, module cache), ``runner``.
"""
from .host import NnHost
from .runner import GuestResult, run_guest

__all__ = ["GuestResult", "NnHost", "run_guest"]
