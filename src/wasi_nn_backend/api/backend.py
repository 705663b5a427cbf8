"""The Pythonic API: Backend -> Graph (a loaded model) -> Session (a conversation).

    with Backend({"backend": {"max_sessions": 50}}) as backend:
        graph = backend.load("model.gguf", {"model": {"n_ctx": 4096}})
        with graph.session() as session:
            print(session.chat("Hello!", temperature=0).text)

Every method is thread-safe. The Backend owns every handle and every lifetime: its handle
tables (graphs; sessions, which are the WASI-NN execution contexts) and the opening and
closing of graphs, sessions and their execution-context state happen here, under one lock;
Graph.close and Session.close ask it. Handles are small ints, never reused within a Backend;
the edges (the function API, wasm, erlang, the CLI) speak in them.

Over 300 lines on purpose: every lifetime (load, replace, unload; open, evict, close) is in this
one class, where one lock orders them; the rules they apply live beside it (loading.py,
janitor.py, graph.py's slot).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from ..config import Config, parse_config
from ..core.clock import Clock, MonotonicClock
from ..errors import BackendRuntimeError, InvalidArgument, NotFound
from ..logs import configure_logging
from .budget import MemoryBudget
from .exec_context import ExecutionContext
from .graph import Graph
from .handles import HandleTable
from .janitor import Janitor, idle_sessions, lru_victim
from .loading import LoadRequest, SingleFlight, open_loaded, prepare
from .session import Session
from .stats import BackendStats
from .stats import collect as collect_stats

log = logging.getLogger("wasi_nn_backend")
Progress = Callable[[float], Any]


class Backend:
    def __init__(self, config: Config | str | bytes | dict | None = None, *,
                 clock: Clock | None = None) -> None:
        if isinstance(config, Config):
            self.config, warnings = config, []
        else:
            self.config, warnings = parse_config(config)
        self._logging = configure_logging(self.config.logging)
        self.clock = clock or MonotonicClock()
        self._lock = threading.RLock()   # the tables below change together, under it
        self._graphs: HandleTable[Graph] = HandleTable(lambda h: f"no graph with handle {h}")
        self._sessions: HandleTable[Session] = HandleTable(
            lambda h: f"no execution context {h} (closed, evicted or never made)")
        self._named: dict[tuple[int, str], Session] = {}
        self._contexts: dict[int, ExecutionContext] = {}   # session handle -> its WASI-NN I/O
        self._replacements = 0
        self._loads = SingleFlight()   # concurrent loads of one model: one load
        self._budget = MemoryBudget(self.config.memory.max_model_memory_mb)
        self._closed = False
        self._janitor = Janitor(self.config.backend, self.cleanup_idle)
        log.info("backend ready (max_sessions=%d)", self.config.backend.max_sessions)

    # -- models ------------------------------------------------------------------------------
    def load(self, path: str | os.PathLike, config: Config | str | bytes | dict | None = None,
             *, progress: Progress | None = None) -> Graph:
        """Load a GGUF file and serve it as a new graph.

        A file already loaded with the same config (equal once parsed: ``{"ctx_size": 512}``
        and ``{"model": {"n_ctx": 512}}`` are the same) returns that graph, shared, not a
        second copy; a different config loads a second graph. With ``backend.hot_swap`` (in
        the backend's config or this load's) the model replaces the one of the graph returned
        last instead (see replace_model). ModelNotFound if the file is missing,
        InvalidEncoding if it is not GGUF, TooLarge if it would pass
        memory.max_model_memory_mb.
        ``progress(fraction)`` hears how far loading is (return False to cancel)."""
        self._check_open()
        request = prepare(path, config, self.config, progress=progress)
        with self._lock:
            graph = self._find(request)
            target = None
            if graph is None and request.config.backend.hot_swap and len(self._graphs):
                target = self._graphs.values()[-1]
        if graph is not None:
            if progress is not None:
                progress(1.0)
            return graph
        if target is not None:
            return self._replace(target, request)
        return self._load_shared(request)

    def load_bytes(self, data: bytes, config: Config | str | bytes | dict | None = None
                   ) -> Graph:
        """Load a model given as bytes (the WASI-NN ``load`` call): always a new graph."""
        self._check_open()
        fd, path = tempfile.mkstemp(suffix=".gguf", prefix="wasi-nn-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            # llama.cpp maps the file; unlinking it later is safe
            return self._new_graph(prepare(path, config, self.config, share=False))
        finally:
            os.unlink(path)

    def replace_model(self, graph: Graph, path: str | os.PathLike,
                      config: Config | str | bytes | dict | None = None, *,
                      progress: Progress | None = None) -> Graph:
        """Hot swap: load ``path`` while ``graph``'s model keeps serving; once it is ready,
        new sessions of ``graph`` (same handle) get it, sessions opened before finish on the
        old model, which is freed when its last session closes. The same file and config as
        served now changes nothing. A failed load (ModelNotFound, InvalidEncoding, TooLarge,
        ...) raises and leaves the old model serving, untouched. Both models are in memory
        until the old one's sessions close: memory.max_model_memory_mb counts both."""
        self._check_open()
        return self._replace(graph, prepare(path, config, self.config, progress=progress))

    def _find(self, request: LoadRequest) -> Graph | None:
        """The live graph serving this request's file and config (moved to the end: it is the
        graph returned last). Under self._lock."""
        for graph in self._graphs.values():
            if graph.current.same_as(request.key):
                self._graphs.put(graph.handle, graph)
                return graph
        return None

    def _load_shared(self, request: LoadRequest) -> Graph:
        """Load once even when several threads ask for the same file and config at once."""
        def load() -> Graph:
            with self._lock:
                graph = self._find(request)
            return graph if graph is not None else self._new_graph(request)
        if request.key is None:
            return self._new_graph(request)
        return self._loads.run(request.key, load)

    def _new_graph(self, request: LoadRequest) -> Graph:
        handle = self._graphs.reserve()
        loaded = open_loaded(request, self._budget, clock=self.clock, name=f"graph{handle}")
        graph = Graph(self, handle, loaded)
        with self._lock:
            closed = self._closed
            if not closed:
                self._graphs.put(handle, graph)
        if closed:
            loaded.free()
            raise BackendRuntimeError("the backend was closed during the load")
        log.info("loaded %s as graph %d in %.3f s", request.path, handle, loaded.load_seconds)
        return graph

    def _replace(self, graph: Graph, request: LoadRequest) -> Graph:
        if not isinstance(graph, Graph) or graph.owner is not self:
            raise InvalidArgument(f"{graph!r} is not a graph of this backend")
        with graph.replace_lock:
            if graph.closed:
                raise NotFound(f"graph {graph.handle} is unloaded")
            if graph.current.same_as(request.key):
                return graph
            with self._lock:
                self._replacements += 1
                count = self._replacements
            loaded = open_loaded(request, self._budget, clock=self.clock,
                                 name=f"graph{graph.handle}-model{count + 1}")
            with self._lock:
                gone = graph.closed or self._closed
                if not gone:
                    old = graph.serve(loaded)
                    self._graphs.put(graph.handle, graph)
            if gone:
                loaded.free()
                raise NotFound(f"graph {graph.handle} was unloaded while its model was being replaced")
        log.info("graph %d now serves %s (loaded in %.3f s)", graph.handle, request.path,
                 loaded.load_seconds)
        if old is not None:
            old.free()
        return graph

    def graph(self, handle: int) -> Graph:
        """NotFound for a handle never made or unloaded."""
        self._check_open()
        return self._graphs.get(handle)

    @property
    def graphs(self) -> list[Graph]:
        """The loaded graphs, the one a load returned last at the end."""
        return self._graphs.values()

    def latest_graph(self) -> Graph:
        """The graph a load returned last (a session id without a graph opens on it);
        InvalidArgument when no model is loaded."""
        graphs = self.graphs
        if not graphs:
            raise InvalidArgument("no model is loaded")
        return graphs[-1]

    @property
    def model_memory_bytes(self) -> int:
        """The estimated footprint of every model loaded (or loading) now, old ones still
        serving sessions after a swap included: what memory.max_model_memory_mb limits."""
        return self._budget.used_bytes

    # -- sessions ----------------------------------------------------------------------------
    def session(self, handle: int) -> Session:
        """NotFound for a handle never made, closed, evicted or of an unloaded graph."""
        self._check_open()
        return self._sessions.get(handle)

    def context(self, handle: int) -> ExecutionContext:
        """The WASI-NN execution context of session ``handle`` (set_input, compute,
        get_output...), made on first use and gone with the session; NotFound as session()."""
        session = self.session(handle)
        with self._lock:
            context = self._contexts.get(handle)
            if context is None:
                if session.closed or self._sessions.find(handle) is not session:
                    raise NotFound(f"execution context {handle} is closed")
                context = self._contexts[handle] = ExecutionContext(session)
            return context

    @property
    def sessions(self) -> list[Session]:
        """The open sessions, oldest first: a reading for inspection (the HTTP server's
        /slots), taken under the lock; they may close right after."""
        with self._lock:
            return self._sessions.values()

    @property
    def context_handles(self) -> list[int]:
        """The sessions whose execution context holds WASI-NN state now (inspection)."""
        with self._lock:
            return list(self._contexts)

    def open_session(self, graph: Graph, name: str | None = None, system: str | None = None
                     ) -> Session:
        """Graph.session: a new session on the model ``graph`` serves now, or the open one
        named ``name`` on it. Room is made first (idle cleanup, LRU at max_sessions)."""
        victims: list[Session] = []
        try:
            with self._lock:
                self._check_open()
                if graph.closed:
                    raise NotFound(f"graph {graph.handle} is unloaded")
                if name is not None and (graph.handle, name) in self._named:
                    session = self._named[(graph.handle, name)]
                    session.touch()
                    return session
                self._make_room(victims)
                handle = self._sessions.reserve()
                session = Session(self, graph, graph.current, handle, name, system)
                graph.current.pin()
                self._sessions.put(handle, session)
                if name is not None:
                    self._named[(graph.handle, name)] = session
                return session
        finally:
            for victim in victims:  # their engines and models are waited for outside the lock
                self._release(victim)

    def _make_room(self, victims: list[Session]) -> None:
        """Before a new session (under the lock): take out idle ones past idle_timeout_ms,
        then the least recently used at max_sessions (janitor.py's rules). What it takes out
        goes into ``victims``, for _release."""
        victims.extend(s for s in self._idle_sessions() if self._take(s))
        victim = lru_victim(self._sessions.values(), self.config.backend)
        if victim is not None:
            self._take(victim)
            victims.append(victim)

    def _idle_sessions(self) -> list[Session]:
        with self._lock:
            sessions = self._sessions.values()
        return idle_sessions(sessions, self.config.backend, self.clock.now())

    def cleanup_idle(self) -> list[int]:
        """Close sessions idle longer than idle_timeout_ms (when auto_cleanup is on); their
        handles become not_found. Runs on a timer too. Returns the handles closed."""
        idle = self._idle_sessions()
        for session in idle:
            self.close_session(session)
        return [s.handle for s in idle]

    def wait_cleanup_pass(self, timeout: float) -> bool:
        """Wait for the idle-cleanup timer to run once more (tests with an injected clock)."""
        return self._janitor.wait_pass(timeout)

    def close_session(self, session: Session) -> None:
        """Session.close: out of the tables, its requests stopped, its KV freed."""
        if self._take(session):
            self._release(session)
        else:
            session.end()

    def _take(self, session: Session) -> bool:
        """Out of the backend's tables (under the lock); False if it was gone already."""
        with self._lock:
            known = self._sessions.remove(session.handle, session)
            if known:
                self._contexts.pop(session.handle, None)
                if session.name is not None:
                    self._named.pop((session.graph.handle, session.name), None)
        return known

    def _release(self, session: Session) -> None:
        """A session taken out: stop it, and free its model if it was the last session of a
        replaced one. Never under the lock (it waits for the engine)."""
        session.end()
        if session.loaded.unpin():
            graph = self._graphs.find(session.graph.handle)
            if graph is not None:
                with self._lock:
                    graph.drop_retired(session.loaded)
            session.loaded.free()

    def close_graph(self, graph: Graph) -> None:
        """Graph.close (unload): refuse new sessions, end the graph's sessions (their requests
        cancelled), free every model it holds."""
        with self._lock:
            models = graph.end()
            if models is None:
                return
            self._graphs.remove(graph.handle, graph)
            sessions = [s for s in self._sessions.values() if s.graph is graph]
        for session in sessions:
            self.close_session(session)
        # A replace_model under way finds the graph closed when its load is done and frees it.
        for loaded in models:
            loaded.free()
        log.info("unloaded graph %d", graph.handle)

    # -- lifecycle ---------------------------------------------------------------------------
    def stats(self) -> BackendStats:
        """A frozen record: sessions, queue, KV cells, swap, token counts, throughput."""
        with self._lock:
            graphs, sessions = self._graphs.values(), self._sessions.values()
        return collect_stats(graphs, sessions, self._budget.used_bytes)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every session and graph; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            graphs = list(self._graphs.values())
        self._janitor.stop()
        for graph in graphs:
            graph.close()
        self._logging.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendRuntimeError("the backend is closed")

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Backend", "BackendStats", "Graph", "Session"]
