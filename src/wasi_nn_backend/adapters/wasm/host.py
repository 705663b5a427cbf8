"""NnHost: one backend that any number of WebAssembly guests share, from any number of threads.

Guests load models by name; the backend returns the graph already loaded for the same file and
config (one engine, continuous batching for every guest that loads it), and the host counts the
references to each backend graph: a guest's graph handle and each of its execution contexts
hold one. When a guest ends (or traps) its contexts are closed and its references dropped, so
its sessions leave the backend. A graph whose last reference goes is unloaded, except that the
most recent graph of each preload alias stays loaded (warm, as a server keeps its preloaded
models) until the host closes: at most one idle graph per alias.

The host calls the Python API (Backend, Graph, Session) and raises its errors; the imports
(imports.py) turn them into witx codes at the guest's border.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...api import Backend, Graph, Session
from ...api.wasi_types import check_load_target
from ...errors import BackendRuntimeError, NotFound
from .names import ModelNames

log = logging.getLogger("wasi_nn_backend.wasm")


@dataclass(eq=False)
class SharedGraph:
    """A backend graph and the number of guest graph handles and contexts that hold it."""

    graph: Graph
    alias: str | None = None     # loaded through this preload alias: kept warm when idle
    refs: int = 0


class NnHost:
    def __init__(self, *, config: str | bytes | dict | None = None,
                 preloads: Sequence[str] = (), allowed_dirs: Sequence[str] = (),
                 max_input_bytes: int = 16 << 20, lenient_output: bool = False) -> None:
        """``config``: the backend's JSON settings (a refused one raises parse_config's
        InvalidArgument / InvalidEncoding). ``preloads``: ``NAME:GGML:AUTO:PATH`` aliases.
        ``allowed_dirs``: where a guest may name a model file by path. ``max_input_bytes``:
        the largest prompt, metadata, config or model name a guest may pass (larger:
        too_large). ``lenient_output``: get_output writes the whole output past
        ``out_max_len`` when it stays inside guest memory (LlamaEdge passes 0)."""
        if max_input_bytes < 0:
            raise ValueError("max_input_bytes must be >= 0")
        self.names = ModelNames(preloads, allowed_dirs)
        self.max_input_bytes = max_input_bytes
        self.lenient_output = lenient_output
        self.backend = Backend(config)
        self._shared: dict[int, SharedGraph] = {}   # backend graph handle -> loaded by name
        self._idle: dict[str, SharedGraph] = {}     # alias -> its graph nobody holds now
        self._lock = threading.Lock()
        self._closed = False

    @property
    def default_timeout_ms(self) -> int:
        """The operator's deadline for every guest request (backend.default_task_timeout_ms;
        0 = none): a guest's metadata or load config can only lower it."""
        return self.backend.config.backend.default_task_timeout_ms

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise BackendRuntimeError("the NnHost is closed")

    def serving(self) -> Backend:
        """The backend, for a guest's call: NotFound once the host is closed (a guest still
        running then finds every handle it held gone)."""
        if self._closed:
            raise NotFound("the NnHost is closed: its backend and every handle are gone")
        return self.backend

    # -- graphs shared between guests ---------------------------------------------------------
    def load_name(self, name: str, config: bytes | None) -> SharedGraph:
        """The graph a guest's model name (alias, or allowed path) stands for, with ``config``:
        the backend loads it once for every guest that asks (same file, same parsed config)."""
        path = self.names.resolve(name)
        alias = name if name in self.names.aliases else None
        while True:
            graph = self.serving().load(path, config)
            with self._lock:
                # A release may have unloaded it between the load and now (releases unload
                # under this lock): then load again.
                if not graph.closed:
                    return self._acquire(graph, alias, shared=True)

    def load_bytes(self, model: bytes, config: bytes | None, encoding: int, target: int
                   ) -> SharedGraph:
        """A graph from model bytes (the ``load`` import): never shared."""
        backend = self.serving()
        check_load_target(encoding, target)
        graph = backend.load_bytes(model, config)
        with self._lock:
            return self._acquire(graph, None, shared=False)

    def open_session(self, shared: SharedGraph) -> Session:
        """A new session (a WASI-NN execution context) on ``shared``, which it holds a
        reference to until release."""
        self.serving()   # NotFound once the host is closed, as for every guest call
        session = shared.graph.session()
        self.retain(shared)
        return session

    def retain(self, shared: SharedGraph) -> None:
        with self._lock:
            shared.refs += 1

    def release(self, shared: SharedGraph) -> None:
        with self._lock:   # unloading under the lock: load_name never keeps a closed graph
            shared.refs -= 1
            if shared.refs > 0:
                return
            unload = [shared]
            if shared.alias is not None and not self._closed:
                previous = self._idle.get(shared.alias)
                self._idle[shared.alias] = shared    # kept warm: the alias's latest graph
                unload = [previous] if previous not in (None, shared) else []
            for old in unload:
                if self._shared.get(old.graph.handle) is old:
                    del self._shared[old.graph.handle]
                if not self._closed:
                    old.graph.close()
                    log.debug("unloaded graph %d", old.graph.handle)

    def _acquire(self, graph: Graph, alias: str | None, *, shared: bool) -> SharedGraph:
        """Under self._lock. ``shared``: loaded by name, so other guests may get it too."""
        held = self._shared.get(graph.handle) if shared else None
        if held is None:
            held = SharedGraph(graph, alias)
            if shared:
                self._shared[graph.handle] = held
        elif held.refs == 0 and held.alias is not None \
                and self._idle.get(held.alias) is held:
            del self._idle[held.alias]               # warm, and in use again
        if held.alias is None:
            held.alias = alias
        held.refs += 1
        return held

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend (idempotent); guests still running get not_found."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shared.clear()
            self._idle.clear()
        self.backend.close()

    def __enter__(self) -> NnHost:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
