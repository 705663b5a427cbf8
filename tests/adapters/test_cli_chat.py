"""`wasi-nn-backend chat` under a real pseudo-terminal: two turns; the second is answered from
the session that holds the first (its tokens come from the session's KV cache)."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "models" / "zen-demo.gguf"
USAGE = re.compile(rb"\((\d+) tokens, (\d+) of (\d+) prompt tokens from the session's cache")


def read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 60.0) -> bytes:
    """Read the pty until ``marker`` appears after what was seen so far (no sleeping)."""
    start = len(seen)
    while marker not in seen[start:]:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no {marker!r} within {timeout} s; got {bytes(seen[start:])!r}"
        try:
            seen += os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
    return bytes(seen[start:])


def test_chat_two_turns_in_a_terminal():
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "wasi_nn_backend.adapters.cli", "chat",
                              str(MODEL)], stdin=slave, stdout=slave, stderr=slave, env=env,
                             close_fds=True)
    os.close(slave)
    seen = bytearray()
    try:
        read_until(master, b"ends it\r\n> ", seen)   # the banner (warnings before it hold "> ")
        os.write(master, b"Recite the Zen of Python.\r")
        first = read_until(master, b"> ", seen)
        assert b"Beautiful is better than ugly." in first
        os.write(master, b"Recite it again.\r")
        second = read_until(master, b"> ", seen)
        os.write(master, b"\r")
        assert child.wait(60) == 0
    finally:
        child.kill()
        os.close(master)
    tokens, reused, prompt = map(int, USAGE.search(second).groups())
    first_tokens, first_reused, first_prompt = map(int, USAGE.search(first).groups())
    assert first_reused == 0
    assert reused >= first_prompt + first_tokens - 1  # turn 1 is still in the session
    assert prompt > reused
