"""The process's wasmtime Engine, the epoch ticker behind ``max_time``, compiled modules.

Epoch interruption bounds a guest's running time: every store gets a deadline in ticks, and a
ticker thread advances the engine's epoch every TICK_S while at least one timed guest runs. The
epoch is shared by every store of the engine, so it must advance at a steady rate (a one-shot
timer would interrupt every other guest whose deadline was "one tick from now" as well).
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from wasmtime import Config, Engine, Module, Store, WasmtimeError

from ...errors import InvalidEncoding
from .deadline import max_time_limit

log = logging.getLogger("wasi_nn_backend.wasm")

TICK_S = 0.01
NO_DEADLINE = 1 << 62          # ticks: "never" for a guest without max_time
MODULE_CACHE_SIZE = 32


def _make_engine() -> Engine:
    config = Config()
    config.epoch_interruption = True
    # Explicit bounds checks and trap instructions instead of SIGSEGV/SIGILL handlers: a signal
    # handler installed after ours (faulthandler, which pytest enables; a JVM; another
    # runtime) would otherwise turn every guest trap into a crash of the whole process.
    config.signals_based_traps = False
    return Engine(config)


ENGINE = _make_engine()


class EpochTicker:
    def __init__(self, engine: Engine, tick_s: float = TICK_S) -> None:
        self._engine = engine
        self._tick_s = tick_s
        self._timed = 0                       # guests with a deadline running now
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @contextmanager
    def deadline(self, store: Store, seconds: float | None) -> Iterator[None]:
        """Within the block, wasm code in ``store`` traps (interrupt) after ``seconds``."""
        seconds = max_time_limit(seconds)
        if seconds is None:
            store.set_epoch_deadline(NO_DEADLINE)
            yield
            return
        with self._lock:
            self._timed += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wasm-epoch-ticker",
                                                daemon=True)
                self._thread.start()
        # +1: the epoch may advance right after this line, cutting the first tick short.
        store.set_epoch_deadline(math.ceil(seconds / self._tick_s) + 1)
        try:
            yield
        finally:
            with self._lock:
                self._timed -= 1

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._timed == 0:
                    self._thread = None
                    return
            time.sleep(self._tick_s)
            self._engine.increment_epoch()


TICKER = EpochTicker(ENGINE)

_modules: OrderedDict[bytes, Module] = OrderedDict()
_modules_lock = threading.Lock()


def compile_module(wasm: bytes) -> Module:
    """The compiled module for these bytes (binary or WAT text), cached by content."""
    key = hashlib.sha256(wasm).digest()
    with _modules_lock:
        module = _modules.get(key)
        if module is not None:
            _modules.move_to_end(key)
            return module
    try:
        module = Module(ENGINE, wasm)   # compiled outside the lock: it may take a while
    except WasmtimeError as error:
        raise InvalidEncoding(f"not a valid WebAssembly module: {_first_line(error)}") from None
    with _modules_lock:
        _modules[key] = module
        while len(_modules) > MODULE_CACHE_SIZE:
            _modules.popitem(last=False)
    return module


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
