"""NnHost: one backend that any number of WebAssembly guests share, from any number of threads.

Guests load models by name; the backend returns the graph already loaded for the same file and
config (one engine, continuous batching for every guest that loads it), and the host counts the
references to each backend graph: a guest's graph handle and each of its execution contexts
hold one. When a guest ends (or traps) its contexts are closed and its references dropped, so
its sessions leave the backend. A graph whose last reference goes is unloaded, except that the
most recent graph of each preload alias stays loaded (warm, as a server keeps its preloaded
models) until the host closes: at most one idle graph per alias.
"""
from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ... import wasi_nn
from ...api.backend import Backend
from ...errors import BackendRuntimeError, ErrorCode, error_for
from .names import ModelNames

log = logging.getLogger("wasi_nn_backend.wasm")


@dataclass(eq=False)
class SharedGraph:
    """A backend graph and the number of guest handles and contexts that hold it."""

    key: Hashable                # the backend graph handle (model bytes: never shared)
    alias: str | None = None     # loaded through this preload alias: kept warm when idle
    handle: int | None = None
    refs: int = 0


class NnHost:
    def __init__(self, *, config: str | dict | None = None, preloads: Sequence[str] = (),
                 allowed_dirs: Sequence[str] = (), max_input_bytes: int = 16 << 20,
                 lenient_output: bool = False) -> None:
        """``config``: the backend's JSON settings. ``preloads``: ``NAME:GGML:AUTO:PATH``
        aliases. ``allowed_dirs``: where a guest may name a model file by path.
        ``max_input_bytes``: the largest prompt, metadata, config or model name a guest may
        pass (larger: too_large). ``lenient_output``: get_output writes the whole output past
        ``out_max_len`` when it stays inside guest memory (LlamaEdge passes 0)."""
        if max_input_bytes < 0:
            raise ValueError("max_input_bytes must be >= 0")
        self.names = ModelNames(preloads, allowed_dirs)
        self.max_input_bytes = max_input_bytes
        self.lenient_output = lenient_output
        text = json.dumps(config) if isinstance(config, dict) else config
        code, handle = wasi_nn.init_backend_with_config(text)
        if code is not ErrorCode.SUCCESS:
            raise error_for(code, "the host's backend config was refused (see the log)")
        self.ctx: int = handle
        self._graphs: dict[Hashable, SharedGraph] = {}
        self._idle: dict[str, SharedGraph] = {}     # alias -> its graph nobody holds now
        self._lock = threading.Lock()
        self._byte_loads = itertools.count()
        self._closed = False

    @property
    def backend(self) -> Backend:
        """The Backend behind the function API handle (stats, inspection)."""
        return wasi_nn.backend_of(self.ctx)

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

    # -- graphs shared between guests ---------------------------------------------------------
    def load_name(self, name: str, config: bytes | None) -> tuple[ErrorCode, SharedGraph | None]:
        """The graph a guest's model name (alias, or allowed path) stands for, with ``config``:
        the backend loads it once for every guest that asks (same file, same parsed config)."""
        path = self.names.resolve(name)
        alias = name if name in self.names.aliases else None
        while True:
            code, handle = wasi_nn.load_by_name_with_config(self.ctx, path, None, config)
            if code is not ErrorCode.SUCCESS:
                return code, None
            with self._lock:
                # A release may have unloaded it between the load and now (releases unload
                # under this lock): then load again.
                if any(graph.handle == handle for graph in self.backend.graphs):
                    return ErrorCode.SUCCESS, self._acquire(handle, alias, handle)

    def load_bytes(self, model: bytes, config: bytes | None, encoding: int, target: int
                   ) -> tuple[ErrorCode, SharedGraph | None]:
        """A graph from model bytes (the ``load`` import): never shared."""
        code, handle = wasi_nn.load(self.ctx, [model, config], encoding, target)
        if code is not ErrorCode.SUCCESS:
            return code, None
        with self._lock:
            return ErrorCode.SUCCESS, self._acquire(("bytes", next(self._byte_loads)), None,
                                                    handle)

    def retain(self, graph: SharedGraph) -> None:
        with self._lock:
            graph.refs += 1

    def release(self, graph: SharedGraph) -> None:
        with self._lock:   # unloading under the lock: load_name never keeps a dead handle
            graph.refs -= 1
            if graph.refs > 0:
                return
            unload = [graph]
            if graph.alias is not None and not self._closed:
                previous = self._idle.get(graph.alias)
                self._idle[graph.alias] = graph      # kept warm: the alias's latest graph
                unload = [previous] if previous not in (None, graph) else []
            for old in unload:
                if self._graphs.get(old.key) is old:
                    del self._graphs[old.key]
                if not self._closed:
                    code = wasi_nn.unload(self.ctx, old.handle)
                    log.debug("unloaded graph %s: %s", old.handle, code.name.lower())

    def _acquire(self, key: Hashable, alias: str | None, handle: int) -> SharedGraph:
        """Under self._lock."""
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = SharedGraph(key, alias, handle)
        elif graph.refs == 0 and graph.alias is not None \
                and self._idle.get(graph.alias) is graph:
            del self._idle[graph.alias]              # warm, and in use again
        if graph.alias is None:
            graph.alias = alias
        graph.refs += 1
        return graph

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Deinitialize the backend (idempotent); guests still running get not_found."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._graphs.clear()
            self._idle.clear()
        wasi_nn.deinit_backend(self.ctx)

    def __enter__(self) -> NnHost:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
