"""`wasi-nn-backend demo`: the bundled model recites the Zen of Python, one session per line,
all decoding together in one engine; their text streams side by side, then a table.

The model, zen-demo.gguf (package data: adapters/bundled.py), was trained (tools/train_demo_model.py) to reproduce the text Python's own
`this` module holds, so every line it prints can be checked against that text.
"""
from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..api import Backend, EndOfStream, Stream
from ..errors import InvalidArgument, WasiNnError
from .bundled import demo_model

MAX_TOKENS = 64   # per line: the longest line of the Zen is 15 tokens


def zen_text() -> str:
    """The Zen of Python as Python's own `this` module holds it (rot13), decoded."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this
    return "".join(this.d.get(c, c) for c in this.s)


def zen_lines(text: str | None = None) -> list[str]:
    return [line for line in (zen_text() if text is None else text).split("\n") if line]


def prompt_words(lines: list[str], line: str) -> int:
    """How many first words of ``line`` make its prompt: two, or more until no other line
    starts with the same words, always leaving at least one word to generate. (The demo model
    was trained with this rule: tools/train_demo_model.py.)"""
    words = line.split(" ")
    count = 2
    while count < len(words) and any(
            other != line and (other + " ").startswith(" ".join(words[:count]) + " ")
            for other in lines):
        count += 1
    return max(1, min(count, len(words) - 1))


def line_prompt(line: str, lines: list[str]) -> str:
    return " ".join(line.split(" ")[:prompt_words(lines, line)])


@dataclass
class Lane:
    prompt: str
    expected: str
    stream: Stream
    text: str = ""
    tokens: int = 0
    seconds: float = 0.0
    done: bool = False
    began: float = field(default_factory=time.perf_counter)
    failure: str = ""     # why the request did not end its line: "timeout", an error, ...

    @property
    def correct(self) -> bool:
        return self.prompt + self.text == self.expected and not self.failure

    @property
    def mark(self) -> str:
        if self.correct:
            return "exact"
        return f"DIFFERS ({self.failure})" if self.failure else "DIFFERS"


def run_demo(sessions: int, model: str | None, out: TextIO | None = None,
             log_level: str = "warn") -> int:
    out = out or sys.stdout  # looked up now: tests swap sys.stdout
    lines = zen_lines()
    if sessions < 1:
        raise InvalidArgument(f"--sessions {sessions}: give at least 1 (one session per line, "
                              f"up to {len(lines) - 1})")
    path = model or str(demo_model())
    picked = lines[1:sessions + 1]
    config = {"model": {"n_ctx": 256, "n_seq_max": len(picked)},
              "logging": {"level": log_level}}
    with Backend(config) as backend:
        graph = backend.load(path)
        out.write(f"model: {Path(path).name} ({graph.model.size_bytes / 1e6:.1f} MB)   "
                  f"sessions: {len(picked)}, decoding together in one engine\n\n")
        handles = [graph.session() for _ in picked]
        lanes = []
        for session, line in zip(handles, picked):
            prompt = line_prompt(line, lines)
            stream = session.complete_stream(prompt, temperature=0, max_tokens=MAX_TOKENS,
                                             stop=["\n"])
            lanes.append(Lane(prompt, line, stream))
        _follow(lanes, out, live=out.isatty())
        steps = graph.engine.counters.steps
    _table(lanes, steps, out)
    return 0 if all(lane.correct for lane in lanes) else 1


def _follow(lanes: list[Lane], out: TextIO, live: bool) -> None:
    """Read every stream until all end; on a terminal, redraw the lanes as they grow."""
    drawn = False
    while not all(lane.done for lane in lanes):
        changed = False
        for lane in lanes:
            if lane.done:
                continue
            try:
                piece = lane.stream.get(timeout=0.05)
            except (EndOfStream, TimeoutError) as end:
                if isinstance(end, EndOfStream):  # _finish reads how it ended
                    _finish(lane)
                    changed = True
                continue
            lane.text += piece
            changed = True
        if live and changed:
            if drawn:
                out.write(f"\x1b[{len(lanes)}F")  # back to the first lane
            for index, lane in enumerate(lanes, start=1):
                out.write(f"\x1b[2K[{index:>2}] {lane.prompt}\x1b[1m{lane.text}\x1b[0m\n")
            out.flush()
            drawn = True
    if not live:
        for index, lane in enumerate(lanes, start=1):
            out.write(f"[{index:>2}] {lane.prompt + lane.text}\n")


def _finish(lane: Lane) -> None:
    lane.seconds = time.perf_counter() - lane.began
    lane.done = True
    try:
        result = lane.stream.result()
    except WasiNnError as error:
        lane.failure = f"{error.code.name.lower()}: {error.message}"
        return
    lane.text = result.text
    lane.tokens = len(result.generated_tokens)
    lane.failure = _why(result.finish_reason.value, lane.tokens)


def _why(finish_reason: str, tokens: int) -> str:
    """What ended a line other than its end (stop at the newline, or the model's end)."""
    if finish_reason == "stop":
        return ""
    if finish_reason == "length":
        return f"length: {tokens} tokens, no end of line"
    return finish_reason   # timeout, time, cancelled


def _table(lanes: list[Lane], steps: int, out: TextIO) -> None:
    out.write(f"\n{'session':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>8}  line\n")
    for index, lane in enumerate(lanes, start=1):
        out.write(f"{index:>7} {lane.tokens:>7} {lane.seconds:>8.3f} "
                  f"{lane.tokens / max(lane.seconds, 1e-9):>8.1f}  {lane.mark}\n")
    total = sum(lane.tokens for lane in lanes)
    wall = max((lane.seconds for lane in lanes), default=0.0)
    out.write(f"{'total':>7} {total:>7} {wall:>8.3f} {total / max(wall, 1e-9):>8.1f}\n\n")
    exact = sum(lane.correct for lane in lanes)
    out.write(f"{exact}/{len(lanes)} lines exactly as in `import this`; {total} tokens in "
              f"{steps} engine steps (sessions decoded together)\n")
