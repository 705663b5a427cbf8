"""Run one WebAssembly guest (a WASI command) against an NnHost.

    with NnHost(preloads=["default:GGML:AUTO:model.gguf"]) as host:
        result = run_guest("chat.wasm", ["Hello"], host=host, max_time=60)
        print(result.exit_code, result.stdout.decode())

Each call makes its own wasmtime Store, Linker and instance on the process's shared Engine, so
any number of threads may run guests through one host at once. The guest sees only the
preopened ``dirs``, the ``env`` given, ``args`` and ``stdin``; its stdout and stderr are
captured (not inherited). Whatever happens, its graphs and contexts are closed when it ends.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wasmtime import (ExitTrap, Func, Linker, Module, Store, Trap, TrapCode, WasiConfig,
                      WasmtimeError)

from ...errors import InvalidArgument, NotFound
from .host import NnHost
from .deadline import max_time_limit
from .imports import GuestNn
from .runtime import ENGINE, TICKER, compile_module

log = logging.getLogger("wasi_nn_backend.wasm")

TRAP_EXIT_CODE = 134      # a trap ends the guest like SIGABRT (128 + 6), as wasmtime's CLI does
TIMEOUT_EXIT_CODE = 124   # max_time passed (as timeout(1) exits)
MAX_CAPTURE_BYTES = 64 << 20  # per stream; a guest printing more has the rest dropped
RELEASE_WAIT_S = 10.0     # how long a run waits for wasmtime to drop its output callbacks
OutputCallback = Callable[[int, bytes], None]


@dataclass(frozen=True)
class GuestResult:
    exit_code: int          # the guest's WASI exit code; 0 when _start returns; non-zero on a trap
    stdout: bytes
    stderr: bytes
    trap: str | None        # the trap / interruption message, None if it exited normally


def run_guest(wasm: str | os.PathLike | bytes, args: Sequence[str] = (), *, host: NnHost,
              dirs: Sequence[tuple[str, str]] = (), env: Mapping[str, str] | None = None,
              max_time: float | None = None, stdin: bytes = b"",
              on_output: OutputCallback | None = None,
              on_expire: Callable[[], None] | None = None) -> GuestResult:
    """Run ``wasm`` (a path, or module bytes: binary or WAT text) with argv
    ``[file name, *args]``; ``dirs`` are (host_path, guest_path) preopens; ``max_time`` bounds
    its running time (seconds): past it wasm code is interrupted, the guest's requests are
    cancelled and its imports refused (exit code 124); a WASI call that blocks (a sleep in
    poll_oneoff) still runs to its end first. ``on_output(fd, data)`` sees output as it is
    written (1 stdout, 2 stderr; stdout includes what ``stream-stdout`` prints during
    compute); ``on_expire()`` is called (on a timer thread) when max_time has passed, before the guest's requests are cancelled. Raises NotFound / InvalidEncoding / InvalidArgument for a guest that cannot
    start (no file, not WebAssembly, an import nobody defines, no ``_start``)."""
    host.check_open()
    max_time = max_time_limit(max_time)
    data, program = _wasm_bytes(wasm)
    module = compile_module(data)
    stdout, stderr = _Capture(1, on_output), _Capture(2, on_output)
    guest = GuestNn(host, max_time, on_expire, stdout)   # its deadline starts now
    stdin_path = store = None
    try:
        stdin_path = _stdin_file(stdin) if stdin else None
        store = Store(ENGINE)
        store.set_wasi(_wasi_config(program, args, dirs, env, stdout, stderr, stdin_path))
        linker = Linker(ENGINE)
        linker.define_wasi()
        guest.define(linker)
        with TICKER.deadline(store, max_time):
            exit_code, trap = _run(linker, store, module, max_time)
        if guest.deadline.expired and exit_code != TIMEOUT_EXIT_CODE:
            # Its time ran out inside a host call (cancelled, or refused as too late): it
            # ran past max_time, whatever it did after that.
            exit_code, trap = TIMEOUT_EXIT_CODE, _past_max_time(max_time, trap or "")
    finally:
        guest.close()
        _close_store(store, stdout, stderr)
        if stdin_path is not None:
            os.unlink(stdin_path)
    return GuestResult(exit_code, bytes(stdout.data), bytes(stderr.data), trap)


def _close_store(store: Store | None, *captures: _Capture) -> None:
    """Free the Store now and wait until wasmtime has let go of the output callbacks.

    wasmtime's WASI streams hold the callbacks in tasks on its tokio worker threads and drop
    them there, shortly after the Store goes: that drop calls into Python. Had run_guest
    returned first, a program exiting right after it could be finalizing the interpreter
    by then, and a thread taking the GIL during finalization is ended by pthread_exit, whose
    unwind through wasmtime's thread start aborts the process ("panic in a function that
    cannot unwind"). Waiting here also means every byte the guest wrote is captured."""
    if store is not None:
        store.close()
    for capture in captures:
        if not capture.wait_released(RELEASE_WAIT_S):
            log.warning("wasmtime still holds the guest's fd %d stream after %.0f s",
                        capture.fd, RELEASE_WAIT_S)


def _run(linker: Linker, store: Store, module: Module, max_time: float | None
         ) -> tuple[int, str | None]:
    instance = None
    try:
        instance = linker.instantiate(store, module)  # runs the module's start function
        start = instance.exports(store).get("_start")
        if not isinstance(start, Func):
            raise InvalidArgument("the guest exports no _start function (not a WASI command)")
        start(store)
    except ExitTrap as exit_trap:
        _drop_frames(exit_trap)
        return exit_trap.code, None
    except Trap as trap:
        return _trapped(trap, max_time)
    except WasmtimeError as error:
        _drop_frames(error)
        if instance is None:  # an import nobody defines, a bad memory or table, ...
            raise InvalidArgument(f"cannot instantiate the guest: {_cause(error)}") from None
        return TRAP_EXIT_CODE, _cause(error)  # e.g. proc_exit(>= 126), which WASI refuses
    return 0, None


def _trapped(trap: Trap, max_time: float | None) -> tuple[int, str]:
    """(exit code, message): the message's first line says why, the rest is wasmtime's
    report with the wasm backtrace."""
    _drop_frames(trap)
    report = str(trap).strip()
    if trap.trap_code == TrapCode.INTERRUPT:
        return TIMEOUT_EXIT_CODE, _past_max_time(max_time, report)
    return TRAP_EXIT_CODE, f"{_cause(trap)}\n{report}"


def _past_max_time(max_time: float | None, report: str) -> str:
    return f"the guest ran past max_time ({max_time} s)\n{report}".rstrip()


def _drop_frames(error: BaseException) -> None:
    """wasmtime-py's trap keeps the frames that raised it, and with them the Store: clear them
    so the store (and its memory) is freed now, not by a later GC or at interpreter exit."""
    traceback.clear_frames(error.__traceback__)


def _cause(error: BaseException) -> str:
    """The last line of wasmtime's report: what went wrong, without the backtrace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = lines[-1] if lines else type(error).__name__
    number, _, rest = cause.partition(": ")
    return rest if number.isdigit() and rest else cause


def _wasm_bytes(wasm: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(wasm, (bytes, bytearray, memoryview)):
        return bytes(wasm), "guest.wasm"
    path = Path(wasm)
    try:
        return path.read_bytes(), path.name
    except OSError as error:
        raise NotFound(f"cannot read the guest {str(path)!r}: {error.strerror}") from None


def _wasi_config(program: str, args: Sequence[str], dirs: Sequence[tuple[str, str]],
                 env: Mapping[str, str] | None, stdout: _Capture, stderr: _Capture,
                 stdin_path: str | None) -> WasiConfig:
    config = WasiConfig()
    config.argv = [program, *[str(arg) for arg in args]]
    pairs = []
    for key, value in (env or {}).items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgument(f"environment variable {key!r} is not KEY=VALUE")
        pairs.append((key, value))
    config.env = pairs
    for host_path, guest_path in dirs:
        if not os.path.isdir(host_path):
            raise NotFound(f"preopen {host_path!r} is not a directory")
        try:
            config.preopen_dir(str(host_path), str(guest_path))
        except WasmtimeError as error:
            raise InvalidArgument(f"cannot preopen {host_path!r} as {guest_path!r}: "
                                  f"{_cause(error)}") from None
    config.stdout_custom = stdout.sink()
    config.stderr_custom = stderr.sink()
    if stdin_path is not None:
        config.stdin_file = stdin_path
    return config


def _stdin_file(data: bytes) -> str:
    # WasiConfig reads stdin only from a file.
    fd, path = tempfile.mkstemp(prefix="wasi-nn-stdin-")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


class _Capture:
    """A WASI output stream: wasmtime calls it (on one of its own threads, while the guest
    waits in fd_write) with each chunk written, through the ``_Sink`` it holds."""

    def __init__(self, fd: int, on_output: OutputCallback | None) -> None:
        self.fd = fd
        self.data = bytearray()
        self.dropped = 0
        self._on_output = on_output
        self._released = threading.Event()
        self._handed = False

    def sink(self) -> _Sink:
        """The callable to hand wasmtime (once): its release sets ``wait_released``."""
        self._handed = True
        return _Sink(self, self._released)

    def wait_released(self, timeout: float) -> bool:
        """True once wasmtime has dropped the sink (or none was handed to it)."""
        return not self._handed or self._released.wait(timeout)

    def __call__(self, chunk: bytes) -> None:
        room = MAX_CAPTURE_BYTES - len(self.data)
        self.data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)
        if self._on_output is not None:
            try:
                self._on_output(self.fd, chunk)
            except Exception:  # an exception here would reach wasmtime's C callback
                log.exception("the on_output callback failed")


class _Sink:
    """What wasmtime holds for one output stream; nothing else refers to it, so it is freed
    (on whichever thread wasmtime drops it) exactly when wasmtime lets go."""

    def __init__(self, capture: _Capture, released: threading.Event) -> None:
        self._capture = capture
        self._released = released

    def __call__(self, chunk: bytes) -> None:
        self._capture(chunk)

    def __del__(self) -> None:
        self._released.set()
