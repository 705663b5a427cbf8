"""The Pythonic API: Backend -> Graph (a loaded model) -> Session (a conversation).

    with Backend({"backend": {"max_sessions": 50}}) as backend:
        graph = backend.load("model.gguf", {"model": {"n_ctx": 4096}})
        with graph.session() as session:
            print(session.chat("Hello!", temperature=0).text)

Every method is thread-safe. Handles (graph.handle, session.handle) are small ints, never
reused within a Backend; the function API (wasi_nn.py) and the adapters speak in them.
"""
from __future__ import annotations

import itertools
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from .budget import MemoryBudget
from ..config import Config, parse_config
from ..core.clock import Clock, MonotonicClock
from ..errors import BackendRuntimeError, InvalidArgument, NotFound, WasiNnError
from .graph import Graph
from .janitor import Janitor
from .loading import LoadRequest, SingleFlight, open_loaded, prepare
from ..logs import configure_logging
from .session import Session
from .stats import BackendStats
from .stats import collect as collect_stats

log = logging.getLogger("wasi_nn_backend")


class Backend:
    def __init__(self, config: Config | str | bytes | dict | None = None, *,
                 clock: Clock | None = None) -> None:
        if isinstance(config, Config):
            self.config, warnings = config, []
        else:
            self.config, warnings = parse_config(config)
        self._logging = configure_logging(self.config.logging)
        self.clock = clock or MonotonicClock()
        self._lock = threading.RLock()
        self._graphs: dict[int, Graph] = {}
        self._sessions: dict[int, Session] = {}
        self._named: dict[tuple[int, str], Session] = {}
        self._graph_ids = itertools.count(1)
        self._session_ids = itertools.count(1)
        self._swap_ids = itertools.count(1)
        self._loads = SingleFlight()   # concurrent loads of one model: one load
        self._budget = MemoryBudget(self.config.memory.max_model_memory_mb)
        self._closed = False
        self._janitor = Janitor(self)
        log.info("backend ready (max_sessions=%d)", self.config.backend.max_sessions)

    # -- models ------------------------------------------------------------------------------
    def load(self, path: str | os.PathLike, config: Config | str | bytes | dict | None = None,
             *, progress: Callable[[float], Any] | None = None) -> Graph:
        """Load a GGUF file and serve it as a new graph.

        A file already loaded with the same config (equal once parsed: ``{"ctx_size": 512}``
        and ``{"model": {"n_ctx": 512}}`` are the same) returns that graph, shared, not a
        second copy; a different config loads a second graph. With ``backend.hot_swap`` (in
        the backend's config or this load's) the model is swapped into the graph returned
        last instead (see swap). ModelNotFound if the file is missing, InvalidEncoding if it
        is not GGUF, TooLarge if it would pass memory.max_model_memory_mb.
        ``progress(fraction)`` hears how far loading is (return False to cancel)."""
        self._check_open()
        request = prepare(path, config, self.config, progress=progress)
        with self._lock:
            graph = self._find(request)
            target = None
            if graph is None and request.config.backend.hot_swap and self._graphs:
                target = list(self._graphs.values())[-1]
        if graph is not None:
            if progress is not None:
                progress(1.0)
            return graph
        if target is not None:
            return self._swap(target, request)
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

    def swap(self, graph: Graph, path: str | os.PathLike,
             config: Config | str | bytes | dict | None = None, *,
             progress: Callable[[float], Any] | None = None) -> Graph:
        """Hot swap: load ``path`` while ``graph``'s model keeps serving; once it is ready,
        new sessions of ``graph`` (same handle) get it, sessions opened before finish on the
        old model, which is freed when its last session closes. The same file and config as
        served now changes nothing. A failed load (ModelNotFound, InvalidEncoding, TooLarge,
        ...) raises and leaves the old model serving, untouched. Both models are in memory
        until the old one's sessions close: memory.max_model_memory_mb counts both."""
        self._check_open()
        return self._swap(graph, prepare(path, config, self.config, progress=progress))

    def _find(self, request: LoadRequest) -> Graph | None:
        """The live graph serving this request's file and config (moved to the end: it is the
        graph returned last). Under self._lock."""
        for handle, graph in list(self._graphs.items()):
            if graph.current.same_as(request.key):
                self._graphs[handle] = self._graphs.pop(handle)
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
        with self._lock:
            handle = next(self._graph_ids)
        loaded = open_loaded(request, self._budget, clock=self.clock, name=f"graph{handle}")
        graph = Graph(self, handle, loaded)
        with self._lock:
            closed = self._closed
            if not closed:
                self._graphs[handle] = graph
        if closed:
            loaded.free()
            raise BackendRuntimeError("the backend was closed during the load")
        log.info("loaded %s as graph %d in %.3f s", request.path, handle, loaded.load_seconds)
        return graph

    def _swap(self, graph: Graph, request: LoadRequest) -> Graph:
        if not isinstance(graph, Graph) or graph.backend is not self:
            raise InvalidArgument(f"{graph!r} is not a graph of this backend")
        with graph.swap_lock:
            if graph.closed:
                raise NotFound(f"graph {graph.handle} is unloaded")
            if graph.current.same_as(request.key):
                return graph
            swaps = next(self._swap_ids)
            loaded = open_loaded(request, self._budget, clock=self.clock,
                                 name=f"graph{graph.handle}-swap{swaps}")
            with self._lock:
                gone = graph.closed or self._closed
                if not gone:
                    old = graph._install(loaded)
                    self._graphs[graph.handle] = self._graphs.pop(graph.handle)
            if gone:
                loaded.free()
                raise NotFound(f"graph {graph.handle} was unloaded during the swap")
        log.info("graph %d now serves %s (loaded in %.3f s)", graph.handle, request.path,
                 loaded.load_seconds)
        if old is not None:
            old.free()
        return graph

    def graph(self, handle: int) -> Graph:
        with self._lock:
            self._check_open()
            graph = self._graphs.get(handle)
        if graph is None:
            raise NotFound(f"no graph with handle {handle}")
        return graph

    @property
    def graphs(self) -> list[Graph]:
        """The loaded graphs, the one a load returned last at the end."""
        with self._lock:
            return list(self._graphs.values())

    @property
    def model_memory_bytes(self) -> int:
        """The estimated footprint of every model loaded (or loading) now, old ones still
        serving sessions after a swap included: what memory.max_model_memory_mb limits."""
        return self._budget.used_bytes

    # -- sessions ----------------------------------------------------------------------------
    def session(self, handle: int) -> Session:
        with self._lock:
            self._check_open()
            session = self._sessions.get(handle)
        if session is None:
            raise NotFound(f"no execution context {handle} (closed, evicted or never made)")
        return session

    def _open_session(self, graph: Graph, name: str | None, system: str | None) -> Session:
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
                session = Session(graph, graph.current, next(self._session_ids), name, system)
                graph.current.pin()
                self._sessions[session.handle] = session
                if name is not None:
                    self._named[(graph.handle, name)] = session
                return session
        finally:
            for victim in victims:  # their engines and models are waited for outside the lock
                self._release(victim)

    def _make_room(self, victims: list[Session]) -> None:
        """Before a new session (under the lock): take out idle ones past idle_timeout_ms,
        then the least recently used if at max_sessions (auto_cleanup); without auto_cleanup
        the limit is an error. What it takes out goes into ``victims``, for _release."""
        settings = self.config.backend
        victims.extend(s for s in self._idle_sessions() if self._take(s))
        if len(self._sessions) < settings.max_sessions:
            return
        idle = [s for s in self._sessions.values() if not s.running]
        if not settings.auto_cleanup or not idle:
            raise BackendRuntimeError(
                f"session limit reached (max_sessions={settings.max_sessions})")
        victim = min(idle, key=lambda s: s.last_activity)
        log.info("closing session %d: least recently used at max_sessions", victim.handle)
        self._take(victim)
        victims.append(victim)

    def _idle_sessions(self) -> list[Session]:
        """Sessions idle longer than idle_timeout_ms (none without auto_cleanup)."""
        settings = self.config.backend
        if not settings.auto_cleanup:
            return []
        now = self.clock.now()
        with self._lock:
            idle = [s for s in self._sessions.values() if not s.running
                    and (now - s.last_activity) * 1000 > settings.idle_timeout_ms]
        for session in idle:
            log.info("closing session %d: idle for over %d ms", session.handle,
                     settings.idle_timeout_ms)
        return idle

    def cleanup_idle(self) -> list[int]:
        """Close sessions idle longer than idle_timeout_ms (when auto_cleanup is on); their
        handles become not_found. Runs on a timer too. Returns the handles closed."""
        idle = self._idle_sessions()
        for session in idle:
            self._forget(session)
        return [s.handle for s in idle]

    def wait_cleanup_pass(self, timeout: float) -> bool:
        """Wait for the idle-cleanup timer to run once more (tests with an injected clock)."""
        return self._janitor.wait_pass(timeout)

    def _forget(self, session: Session) -> None:
        if self._take(session):
            self._release(session)
        else:
            session._shutdown()

    def _take(self, session: Session) -> bool:
        """Out of the backend's tables (under the lock); False if it was gone already."""
        with self._lock:
            known = self._sessions.pop(session.handle, None) is session
            if known and session.name is not None:
                self._named.pop((session.graph.handle, session.name), None)
        return known

    def _release(self, session: Session) -> None:
        """A session taken out: stop it, and free its model if it was the last session of a
        swapped-out one. Never under the lock (it waits for the engine)."""
        session._shutdown()
        if session.loaded.unpin():
            with self._lock:
                if session.loaded in session.graph.retired:
                    session.graph.retired.remove(session.loaded)
            session.loaded.free()

    def _close_graph(self, graph: Graph) -> None:
        """Unload: refuse new sessions, end the graph's sessions (their requests cancelled),
        free every model it holds."""
        with self._lock:
            if graph.closed:
                return
            graph._closed = True
            if self._graphs.get(graph.handle) is graph:
                del self._graphs[graph.handle]
            sessions = [s for s in self._sessions.values() if s.graph is graph]
        for session in sessions:
            self._forget(session)
        # A swap under way finds the graph closed when its load is done and frees that load.
        for loaded in graph.loaded_models():
            loaded.free()
        graph.retired.clear()
        log.info("unloaded graph %d", graph.handle)

    # -- lifecycle ---------------------------------------------------------------------------
    def stats(self) -> BackendStats:
        """A frozen record: sessions, queue, KV cells, swap, token counts, throughput."""
        with self._lock:
            graphs, sessions = list(self._graphs.values()), list(self._sessions.values())
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


__all__ = ["Backend", "BackendStats", "Graph", "Session", "WasiNnError"]
