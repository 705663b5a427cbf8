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
from collections.abc import Callable
import logging
import os
import tempfile
import threading
from typing import Any

from .config import Config, parse_config, request_params
from .core.clock import Clock, MonotonicClock
from .engine.engine import Engine, file_type_name, load_model
from .errors import BackendRuntimeError, InvalidArgument, NotFound, WasiNnError
from .logs import configure_logging
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
        self._closed = False
        self._janitor = _Janitor(self)
        log.info("backend ready (max_sessions=%d)", self.config.backend.max_sessions)

    # -- models ------------------------------------------------------------------------------
    def load(self, path: str | os.PathLike, config: Config | str | bytes | dict | None = None,
             *, progress: Callable[[float], Any] | None = None) -> Graph:
        """Load a GGUF file; ModelNotFound if it is missing, InvalidEncoding if not GGUF.
        ``progress(fraction)`` hears how far loading is (return False to cancel)."""
        self._check_open()
        if path is None or str(path) == "":
            raise InvalidArgument("a model path is required")
        graph_config, _ = parse_config(config, base=self.config)  # warnings already logged
        model = load_model(str(path), graph_config.model, progress)
        try:
            if graph_config.model.n_ctx > model.n_ctx_train:
                log.warning("n_ctx %d exceeds the model's training context %d",
                            graph_config.model.n_ctx, model.n_ctx_train)
            with self._lock:
                handle = next(self._graph_ids)
            engine = Engine(model, graph_config, clock=self.clock, name=f"graph{handle}")
        except BaseException:
            model.close()
            raise
        graph = Graph(self, handle, str(path), model, engine, graph_config)
        with self._lock:
            if self._closed:
                graph._shutdown()
                raise BackendRuntimeError("the backend was closed during the load")
            self._graphs[handle] = graph
        log.info("loaded %s as graph %d", path, handle)
        return graph

    def load_bytes(self, data: bytes, config: Config | str | bytes | dict | None = None
                   ) -> Graph:
        """Load a model given as bytes (the WASI-NN ``load`` call)."""
        fd, path = tempfile.mkstemp(suffix=".gguf", prefix="wasi-nn-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            return self.load(path, config)  # llama.cpp maps the file; unlinking later is safe
        finally:
            os.unlink(path)

    def graph(self, handle: int) -> Graph:
        with self._lock:
            self._check_open()
            graph = self._graphs.get(handle)
        if graph is None:
            raise NotFound(f"no graph with handle {handle}")
        return graph

    @property
    def graphs(self) -> list[Graph]:
        with self._lock:
            return list(self._graphs.values())

    # -- sessions ----------------------------------------------------------------------------
    def session(self, handle: int) -> Session:
        with self._lock:
            self._check_open()
            session = self._sessions.get(handle)
        if session is None:
            raise NotFound(f"no execution context {handle} (closed, evicted or never made)")
        return session

    def _open_session(self, graph: Graph, name: str | None, system: str | None) -> Session:
        with self._lock:
            self._check_open()
            if name is not None and (graph.handle, name) in self._named:
                session = self._named[(graph.handle, name)]
                session.touch()
                return session
            self._make_room()
            session = Session(graph, next(self._session_ids), name, system)
            self._sessions[session.handle] = session
            if name is not None:
                self._named[(graph.handle, name)] = session
            return session

    def _make_room(self) -> None:
        """Before a new session: drop idle ones past idle_timeout_ms, then the least recently
        used if at max_sessions (auto_cleanup); without auto_cleanup the limit is an error."""
        settings = self.config.backend
        self.cleanup_idle()
        if len(self._sessions) < settings.max_sessions:
            return
        idle = [s for s in self._sessions.values() if not s.running]
        if not settings.auto_cleanup or not idle:
            raise BackendRuntimeError(
                f"session limit reached (max_sessions={settings.max_sessions})")
        victim = min(idle, key=lambda s: s.last_activity)
        log.info("closing session %d: least recently used at max_sessions", victim.handle)
        self._forget(victim)

    def cleanup_idle(self) -> list[int]:
        """Close sessions idle longer than idle_timeout_ms (when auto_cleanup is on); their
        handles become not_found. Runs on a timer too. Returns the handles closed."""
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
            self._forget(session)
        return [s.handle for s in idle]

    def wait_cleanup_pass(self, timeout: float) -> bool:
        """Wait for the idle-cleanup timer to run once more (tests with an injected clock)."""
        return self._janitor.wait_pass(timeout)

    def _forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.handle, None)
            if session.name is not None:
                self._named.pop((session.graph.handle, session.name), None)
        session._shutdown()

    def _forget_graph(self, graph: Graph) -> None:
        with self._lock:
            self._graphs.pop(graph.handle, None)
            sessions = [s for s in self._sessions.values() if s.graph is graph]
        for session in sessions:
            self._forget(session)

    # -- lifecycle ---------------------------------------------------------------------------
    def stats(self) -> BackendStats:
        """A frozen record: sessions, queue, KV cells, swap, token counts, throughput."""
        with self._lock:
            graphs, sessions = list(self._graphs.values()), list(self._sessions.values())
        return collect_stats(graphs, sessions)

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


class _Janitor:
    """The idle-cleanup timer: a thread that calls backend.cleanup_idle() every quarter of
    idle_timeout_ms (between 50 ms and 1 s of real time); idleness itself is measured on the
    backend's clock."""

    def __init__(self, backend: Backend) -> None:
        settings = backend.config.backend
        self._backend = backend
        self._interval = min(max(settings.idle_timeout_ms / 4000, 0.05), 1.0)
        self._stopped = threading.Event()
        self._cond = threading.Condition()
        self._passes = 0
        self._thread = threading.Thread(target=self._run, name="wasi-nn-idle-cleanup",
                                        daemon=True)
        if settings.auto_cleanup:
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._backend.cleanup_idle()
            except WasiNnError:
                pass  # closed meanwhile
            except Exception:
                log.exception("idle cleanup failed")
            with self._cond:
                self._passes += 1
                self._cond.notify_all()

    def wait_pass(self, timeout: float) -> bool:
        with self._cond:
            target = self._passes + 1
            return self._cond.wait_for(lambda: self._passes >= target, timeout)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()


class Graph:
    """A loaded model with its engine."""

    def __init__(self, backend: Backend, handle: int, path: str, model: Any, engine: Engine,
                 config: Config) -> None:
        self.backend = backend
        self.handle = handle
        self.path = path
        self.model = model
        self.engine = engine
        self.config = config
        self.defaults = request_params(config)
        self._closed = False

    def session(self, id: str | None = None, *, system: str | None = None) -> Session:
        """A new session, or the existing one with this id (its history kept)."""
        if self._closed:
            raise NotFound(f"graph {self.handle} is unloaded")
        return self.backend._open_session(self, id, system)

    def info(self) -> dict[str, Any]:
        model = self.model
        return {"path": self.path, "architecture": model.architecture,
                "description": model.description, "n_params": model.n_params,
                "size_bytes": model.size_bytes, "n_vocab": model.n_vocab,
                "n_ctx_train": model.n_ctx_train, "n_ctx": self.config.model.n_ctx,
                "n_seq_max": self.config.model.n_seq_max,
                "file_type": file_type_name(model.metadata.get("general.file_type")),
                "chat_template": model.chat_template, "embedding": self.config.model.embedding,
                "n_embd": model.n_embd_out}

    def close(self) -> None:
        """Unload: its sessions end, the engine stops, the model is freed; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.backend._forget_graph(self)
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self.engine.close()
        self.model.close()

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Backend", "BackendStats", "Graph", "Session", "WasiNnError"]
