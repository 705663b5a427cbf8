"""Outputs for a guest: a whole output through the function API's buffer contract, and
WasmEdge's ``stream-stdout`` (compute printing each piece to stdout as it is generated).

WasmEdge's GGML plugin, with ``stream-stdout`` true in the load config or the metadata, prints
every piece it appends to the output (``fmt::print`` and ``fflush(stdout)``) during compute;
get_output still returns the whole text. Under run_guest stdout is the guest's own stdout
stream (captured, and passed to ``on_output`` as written), where WasmEdge's would be the
process's, which its guests share.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ... import wasi_nn
from ...errors import ErrorCode

FETCH_BYTES = 64 << 10   # first try at an output: most fit, larger ones take a second call
STREAM_STDOUT = "stream-stdout"


def fetch_output(fetch: Callable[..., tuple[ErrorCode, Any]], ctx: int, exec_ctx: int,
                 index: int) -> tuple[ErrorCode, bytes]:
    """The whole output through the function API's buffer contract: too_large says the size
    needed, so a second call with that size gets it (a third if it grew meanwhile)."""
    size = FETCH_BYTES
    for _ in range(3):
        buffer = bytearray(size)
        code, value = fetch(ctx, exec_ctx, index, buffer)
        if code is ErrorCode.SUCCESS:
            return code, bytes(buffer[:value])
        if code is not ErrorCode.TOO_LARGE or value is None:
            return code, b""
        size = value
    return ErrorCode.TOO_LARGE, b""


def stream_stdout_flag(document: bytes | None) -> bool | None:
    """The ``stream-stdout`` value of a config or metadata document the backend has accepted
    (so it is JSON and the value a boolean), from the root or a ``runtime`` wrapper (which
    wins, as in the config parser); None when the document does not give one."""
    if not document or STREAM_STDOUT.encode() not in document:
        return None
    text = document.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\0")
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    runtime = doc.get("runtime")
    if isinstance(runtime, dict) and isinstance(runtime.get(STREAM_STDOUT), bool):
        return runtime[STREAM_STDOUT]
    value = doc.get(STREAM_STDOUT)
    return value if isinstance(value, bool) else None


def compute_printing(ctx: int, exec_ctx: int, write: Callable[[bytes], None]) -> ErrorCode:
    """compute with each piece passed to ``write`` as it is generated. It runs the streaming
    calls to their end, which leaves get_output's text (every piece) and usage as compute
    does, and the same code for a generation that ends early (context_full, timeout)."""
    wasi_nn.fini_single(ctx, exec_ctx)           # compute starts from the prompt, always
    try:
        while True:
            code = wasi_nn.compute_single(ctx, exec_ctx)
            if code is ErrorCode.END_OF_SEQUENCE:
                return ErrorCode.SUCCESS
            if code is not ErrorCode.SUCCESS:
                return code
            code, piece = fetch_output(wasi_nn.get_output_single, ctx, exec_ctx, 0)
            if code is not ErrorCode.SUCCESS:
                return code
            if piece:
                write(piece)
    finally:   # as after compute: no stream open (the text and usage stay readable)
        wasi_nn.fini_single(ctx, exec_ctx)
