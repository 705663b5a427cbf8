"""Terminal helpers for the command line: a model-loading progress bar (only on a terminal) and
the interactive `chat` loop."""
from __future__ import annotations

import sys
from typing import Any, TextIO

from ..api import Backend, Graph


def load(backend: Backend, path: str, config: Any = None, err: TextIO | None = None) -> Graph:
    """backend.load with a progress bar on stderr when it is a terminal (none when piped)."""
    err = err or sys.stderr
    if not err.isatty():
        return backend.load(path, config)
    shown = [-1]

    def progress(fraction: float) -> bool:
        percent = int(fraction * 100)
        if percent != shown[0]:
            shown[0] = percent
            filled = percent * 30 // 100
            err.write(f"\rloading {path} [{'#' * filled}{' ' * (30 - filled)}] {percent:3d}%")
            err.flush()
        return True
    try:
        return backend.load(path, config, progress=progress)
    finally:
        err.write("\r\x1b[2K")
        err.flush()


def chat(graph: Graph, system: str | None, out: TextIO, inp: TextIO) -> int:
    """Read a message per line, stream the reply, keep the session (so the history) until an
    empty line or end of input."""
    session = graph.session(system=system)
    out.write("chat with the model; an empty line or Ctrl-D ends it\n")
    while True:
        out.write("> ")
        out.flush()
        line = inp.readline()
        if not line.strip():
            break
        stream = session.chat_stream(line.rstrip("\n"))
        for piece in stream:
            out.write(piece)
            out.flush()
        done = stream.result()
        out.write(f"\n({len(done.generated_tokens)} tokens, {done.reused_tokens} of "
                  f"{done.prompt_tokens} prompt tokens from the session's cache, "
                  f"{done.seconds:.2f} s)\n")
    session.close()
    return 0
