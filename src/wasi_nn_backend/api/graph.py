"""Graph: a served-model slot. Its handle stays the same for as long as it is loaded, whatever
model it serves: ``replace_model`` (hot swap) loads another model beside the one serving and,
once it is ready, points the slot at it. Sessions are pinned to the model they were opened on (a conversation
stays on one model; its KV cache stays warm): sessions opened before a swap finish their chats
on the old model, new sessions get the new one, and the old model is freed when its last
session closes (closed by the caller, idle cleanup or LRU eviction).

The Backend owns every lifetime: a Graph asks its owner to open a session, replace its model or
unload it, and the owner calls the slot's own methods (serve, end) under its lock.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import NotFound

if TYPE_CHECKING:
    from .models import LoadedModel
    from .session import Session

log = logging.getLogger("wasi_nn_backend")


class GraphOwner(Protocol):
    """What a Graph asks of the Backend that made it."""

    def open_session(self, graph: Graph, name: str | None, system: str | None) -> Session: ...

    def replace_model(self, graph: Graph, path: str, config: Any = None, *,
                      progress: Callable[[float], Any] | None = None) -> Graph: ...

    def close_graph(self, graph: Graph) -> None: ...


class Graph:
    def __init__(self, owner: GraphOwner, handle: int, loaded: LoadedModel) -> None:
        self.owner = owner
        self.handle = handle
        self.current = loaded                   # what new sessions get
        self.retired: list[LoadedModel] = []    # swapped out, still serving their sessions
        self.replace_lock = threading.Lock()    # one replace_model at a time
        self._closed = False

    # What the slot serves now (sessions keep the model they were opened on: session.loaded).
    path = property(lambda self: self.current.path)
    model = property(lambda self: self.current.model)
    engine = property(lambda self: self.current.engine)
    config = property(lambda self: self.current.config)
    defaults = property(lambda self: self.current.defaults)

    @property
    def closed(self) -> bool:
        return self._closed

    def session(self, id: str | None = None, *, system: str | None = None) -> Session:
        """A new session on the model served now, or the existing one with this id (history
        kept, on the model it was opened on). NotFound once the graph is unloaded."""
        if self._closed:
            raise NotFound(f"graph {self.handle} is unloaded")
        return self.owner.open_session(self, id, system)

    def replace_model(self, path: str, config: Any = None, *,
                      progress: Callable[[float], Any] | None = None) -> Graph:
        """Hot swap: load ``path`` while the current model keeps serving, then serve it.
        See Backend.replace_model."""
        return self.owner.replace_model(self, path, config, progress=progress)

    def info(self) -> dict[str, Any]:
        """The model served now: architecture, parameters, context trained, vocabulary, chat
        template, quantization, file size, load time, memory estimate, and this load's n_ctx
        and n_seq_max; ``old_models_serving``: swapped-out models still finishing sessions."""
        return {"handle": self.handle, **self.current.info(),
                "old_models_serving": len(self.retired)}

    # -- the owner's side (under its lock) ----------------------------------------------------
    def serve(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve ``loaded`` from now on. Returns the old model when no session holds it (the
        caller frees it); else it stays, retired, until its last session closes."""
        old, self.current = self.current, loaded
        if old.retire():
            return old
        self.retired.append(old)
        log.info("graph %d: the old model %s serves its %d session(s) until they close",
                 self.handle, old.path, old.sessions)
        return None

    def loaded_models(self) -> list[LoadedModel]:
        return [self.current, *self.retired]

    def drop_retired(self, loaded: LoadedModel) -> None:
        """A retired model's last session closed: the caller frees it."""
        if loaded in self.retired:
            self.retired.remove(loaded)

    def end(self) -> list[LoadedModel] | None:
        """Mark the slot unloaded; the models it holds, for the caller to free (None when it
        was unloaded already)."""
        if self._closed:
            return None
        self._closed = True
        models, self.retired = self.loaded_models(), []
        return models

    def close(self) -> None:
        """Unload: new sessions are refused (NotFound), every session of it ends (a running
        request is cancelled within one engine step and returns what it has, with not_found
        in the function API), the engines stop and the models are freed; idempotent."""
        self.owner.close_graph(self)

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
