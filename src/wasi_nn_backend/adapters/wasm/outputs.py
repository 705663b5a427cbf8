"""WasmEdge's ``stream-stdout``: compute printing each piece to stdout as it is generated.

WasmEdge's GGML plugin, with ``stream-stdout`` true in the load config or the metadata, prints
every piece it appends to the output (``fmt::print`` and ``fflush(stdout)``) during compute;
get_output still returns the whole text. Under run_guest stdout is the guest's own stdout
stream (captured, and passed to ``on_output`` as written), where WasmEdge's would be the
process's, which its guests share.

The config parser checks ``stream-stdout`` (a boolean) but keeps no setting for it (config/
keys.py's ``_host_flag``: only this host reads it), so the host reads it from the documents the
backend accepted.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from ...api import ExecutionContext
from ...errors import EndOfSequence

STREAM_STDOUT = "stream-stdout"


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


def compute_printing(execution: ExecutionContext, write: Callable[[bytes], None]) -> None:
    """compute with each piece passed to ``write`` as it is generated. It runs the streaming
    calls to their end, which leaves get_output's text (every piece) and usage as compute
    does, and raises as compute does for a generation that ends early (ContextFull,
    Timeout)."""
    execution.fini_single()           # compute starts from the prompt, always
    try:
        while True:
            try:
                execution.compute_single()
            except EndOfSequence:
                return
            piece = execution.output_single(0)
            if piece:
                write(piece)
    finally:   # as after compute: no stream open (the text and usage stay readable)
        execution.fini_single()
