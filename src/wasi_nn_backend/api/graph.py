"""Graph: a served-model slot. Its handle stays the same for as long as it is loaded, whatever
model it serves: ``swap`` loads another model beside the one serving and, once it is ready,
points the slot at it. Sessions are pinned to the model they were opened on (a conversation
stays on one model; its KV cache stays warm): sessions opened before a swap finish their chats
on the old model, new sessions get the new one, and the old model is freed when its last
session closes (closed by the caller, idle cleanup or LRU eviction).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NotFound

if TYPE_CHECKING:
    from .backend import Backend
    from .models import LoadedModel
    from .session import Session

log = logging.getLogger("wasi_nn_backend")


class Graph:
    def __init__(self, backend: Backend, handle: int, loaded: LoadedModel) -> None:
        self.backend = backend
        self.handle = handle
        self.current = loaded                   # what new sessions get
        self.retired: list[LoadedModel] = []    # swapped out, still serving their sessions
        self.swap_lock = threading.Lock()       # one swap at a time
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
        return self.backend._open_session(self, id, system)

    def swap(self, path: str, config: Any = None, *,
             progress: Callable[[float], Any] | None = None) -> Graph:
        """Hot swap: load ``path`` while the current model keeps serving, then serve it.
        See Backend.swap."""
        return self.backend.swap(self, path, config, progress=progress)

    def info(self) -> dict[str, Any]:
        """The model served now: architecture, parameters, context trained, vocabulary, chat
        template, quantization, file size, load time, memory estimate, and this load's n_ctx
        and n_seq_max; ``old_models_serving``: swapped-out models still finishing sessions."""
        return {"handle": self.handle, **self.current.info(),
                "old_models_serving": len(self.retired)}

    def _install(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve ``loaded`` from now on (under the backend's lock). Returns the old model when
        no session holds it (the caller frees it); else it stays, retired, until its last
        session closes."""
        old, self.current = self.current, loaded
        if old.retire():
            return old
        self.retired.append(old)
        log.info("graph %d: the old model %s serves its %d session(s) until they close",
                 self.handle, old.path, old.sessions)
        return None

    def loaded_models(self) -> list[LoadedModel]:
        return [self.current, *self.retired]

    def close(self) -> None:
        """Unload: new sessions are refused (NotFound), every session of it ends (a running
        request is cancelled within one engine step and returns what it has, with not_found
        in the function API), the engines stop and the models are freed; idempotent."""
        self.backend._close_graph(self)

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
