"""Shared by the Erlang port tests (tests/ is on sys.path): the port program run the way the
VM runs it, fds 3/4 on pipes (as open_port(..., [nouse_stdio, {packet, 4}]) does), the test
playing the VM in External Term Format through erlang_py, the library the port itself uses."""
from __future__ import annotations

import contextlib
import itertools
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import erlang

PORT_MODULE = ("-m", "wasi_nn_backend.adapters.erlang")
CLI = ("-m", "wasi_nn_backend.adapters.cli", "erlang-port")
# Puts the two pipe ends given by number on fds 3 and 4, then execs the port (pass_fds keeps
# numbers, it does not move them; the VM's fork does the same dance).
LAUNCH = """
import fcntl, os, sys
ends = [int(fd) for fd in sys.argv[1:3]]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends]
os.dup2(high[0], 3)
os.dup2(high[1], 4)
for fd in ends:
    if fd not in (3, 4):
        os.close(fd)
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def B(text: str | bytes) -> erlang.OtpErlangBinary:
    return erlang.OtpErlangBinary(text.encode() if isinstance(text, str) else text)


def A(name: str) -> erlang.OtpErlangAtom:
    return erlang.OtpErlangAtom(name)


def plain(term: Any) -> Any:
    """Replies as plain Python: atoms -> str, binaries -> bytes, tuples stay tuples."""
    if isinstance(term, erlang.OtpErlangAtom):
        return term.value if isinstance(term.value, str) else term.value.decode("latin-1")
    if isinstance(term, erlang.OtpErlangBinary):
        return term.value
    if term is None:
        return "undefined"
    if isinstance(term, tuple):
        return tuple(plain(element) for element in term)
    return term


def error_of(reply: Any) -> tuple[str, str]:
    assert reply[0] == "error" and isinstance(reply[1][1], bytes), reply
    return reply[1][0], reply[1][1].decode()


class PortProcess:
    """A port program run the way the VM runs it; the test holds the VM's pipe ends."""

    def __init__(self, workdir: Path, command: tuple[str, ...] = PORT_MODULE) -> None:
        port_in, self.to_port = os.pipe()
        self.from_port, port_out = os.pipe()
        self.log_path = workdir / "port.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, str(port_in), str(port_out), *command],
                pass_fds=(port_in, port_out), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=workdir)
        os.close(port_in)
        os.close(port_out)
        self._buffer = b""
        self._ids = itertools.count(1)
        self.muted: set = set()   # request Ids whose {token, _} events receive() drops
        self.logs: list = []      # {log, Level, Logger, Message} frames (--log-frames), plain

    def send_raw(self, payload: bytes) -> None:
        frame = memoryview(struct.pack(">I", len(payload)) + payload)
        while frame:
            frame = frame[os.write(self.to_port, frame):]

    def send(self, term: Any) -> None:
        self.send_raw(erlang.term_to_binary(term))

    def receive(self, timeout: float = 60) -> tuple[Any, Any]:
        """The next reply, decoded: (Id as sent back, the rest as plain Python)."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buffer) >= 4:
                (size,) = struct.unpack(">I", self._buffer[:4])
                if len(self._buffer) >= 4 + size:
                    frame, self._buffer = self._buffer[4:4 + size], self._buffer[4 + size:]
                    term = erlang.binary_to_term(frame)
                    if len(term) == 4 and plain(term[0]) == "log":
                        self.logs.append(plain(term))
                        continue
                    request_id, reply = term
                    reply = plain(reply)
                    if isinstance(request_id, int) and request_id in self.muted \
                            and reply[0] == "token":
                        continue
                    return request_id, reply
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.from_port], [], [], left)[0], \
                f"no reply within {timeout} s; port log:\n{self.log()}"
            chunk = os.read(self.from_port, 1 << 16)
            assert chunk, f"the port closed fd 4; log:\n{self.log()}"
            self._buffer += chunk

    def request(self, op: str, *args: Any, timeout: float = 60) -> Any:
        """Send one request and return its reply (nothing else may be in flight)."""
        request_id = next(self._ids)
        self.send((request_id, A(op), tuple(args)))
        got_id, reply = self.receive(timeout)
        assert got_id == request_id, (got_id, reply)
        return reply

    def ok(self, op: str, *args: Any) -> Any:
        reply = self.request(op, *args)
        assert reply == "ok" or reply[0] == "ok", reply
        return None if reply == "ok" else reply[1]

    def threads(self) -> int:
        """How many threads the port process has now."""
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def status_kb(self, field: str) -> int:
        """A memory line of /proc/<pid>/status in kB: VmRSS (now), VmHWM (peak so far)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def close_input(self) -> None:
        os.close(self.to_port)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the port did not exit; log:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.to_port, self.from_port):
            try:
                os.close(fd)
            except OSError:
                pass


@contextlib.contextmanager
def loaded_port(workdir: Path, model: str, backend_config: str = ""):
    """A port with a backend (``.ctx``) that has ``model`` loaded on one llama.cpp thread (on a
    busy 2-CPU machine two spin against each other; greedy output is the same either way);
    at the end, EOF on fd 3 and a clean exit."""
    process = PortProcess(workdir)
    try:
        process.ctx = process.ok("init_backend", B(backend_config))
        assert isinstance(process.ctx, int)
        process.ok("load_by_name_with_config", process.ctx, B(model),
                   B('{"model":{"threads":1}}'))
        yield process
        process.close_input()
        assert process.wait() == 0
    finally:
        process.cleanup()
