"""LoadedModel: one GGUF file loaded with one config, its engine thread, and the sessions pinned
to it. A Graph serves one at a time; after a hot swap the old one is *retired*: it serves the
sessions opened before the swap until the last of them closes, and is freed then.

ModelKey says when two loads are the same: the same file (real path, device, inode, size,
modification time) and equal parsed configs, load-behaviour keys aside (backend.hot_swap,
memory.max_model_memory_mb, logging: they change how a load happens, not what is served).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .budget import Reservation
from ..config import Config, LoggingConfig, request_params
from ..engine.footprint import Footprint
from ..engine.loader import Started
from ..errors import NotFound

log = logging.getLogger("wasi_nn_backend")


@dataclass(frozen=True)
class ModelKey:
    real_path: str
    file_signature: tuple[int, int, int, int]   # st_dev, st_ino, st_size, st_mtime_ns
    config: Config


def model_key(path: str, config: Config) -> ModelKey | None:
    """The key of ``path`` loaded with ``config``; None when the file cannot be stat'ed."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    served = config.model_copy(update={
        "backend": config.backend.model_copy(update={"hot_swap": False}),
        "memory": config.memory.model_copy(update={"max_model_memory_mb": 0}),
        "logging": LoggingConfig()})
    return ModelKey(real, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), served)


class LoadedModel:
    def __init__(self, path: str, config: Config, started: Started, footprint: Footprint,
                 key: ModelKey | None, reservation: Reservation) -> None:
        self.path = path
        self.config = config
        self.defaults = request_params(config)
        self.model = started.model
        self.engine = started.engine
        self.load_seconds = started.load_seconds
        self.facts = started.facts
        self.footprint = footprint
        self.key = key
        self._reservation = reservation
        self._lock = threading.Lock()
        self._sessions = 0
        self._retired = False
        self._freed = False
        # Callers' threads inside a C call on the model (tokenizing, a grammar check): free()
        # waits for them, since llama_model_free under a running llama_tokenize is a crash.
        self._users: dict[int, int] = {}
        self._no_users = threading.Condition(self._lock)

    def same_as(self, key: ModelKey | None) -> bool:
        return key is not None and self.key == key

    # -- sessions pinned to it ---------------------------------------------------------------
    @property
    def sessions(self) -> int:
        return self._sessions

    @property
    def retired(self) -> bool:
        return self._retired

    @property
    def freed(self) -> bool:
        return self._freed

    def pin(self) -> None:
        with self._lock:
            self._sessions += 1

    def unpin(self) -> bool:
        """One session closed; True when it was the last on a retired model (free it now)."""
        with self._lock:
            self._sessions -= 1
            return self._retired and self._sessions <= 0 and not self._freed

    def retire(self) -> bool:
        """A swap replaced it; True when no session holds it (free it now)."""
        with self._lock:
            self._retired = True
            return self._sessions <= 0 and not self._freed

    # -- facts -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What is served: the model's facts, this load's settings, its memory and load time."""
        facts = dict(self.facts)
        template = facts.pop("chat_template")
        return {"path": self.path, **facts, "n_ctx": self.config.model.n_ctx,
                "n_seq_max": self.config.model.n_seq_max,
                "embedding": self.config.model.embedding,
                "load_seconds": round(self.load_seconds, 6), "memory": self.footprint.as_mb(),
                "chat_template": template}

    def usage_facts(self) -> dict[str, Any]:
        """The short form for a usage JSON (no chat template)."""
        keys = ("name", "architecture", "n_params", "n_vocab", "n_ctx_train", "quantization",
                "file_size")
        return {"path": self.path, **{k: self.facts[k] for k in keys},
                "n_ctx": self.config.model.n_ctx, "load_seconds": round(self.load_seconds, 6)}

    # -- lifetime ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Around work on the model from a caller's thread: free() waits until it is done.
        NotFound once the model is freed (or being freed)."""
        me = threading.get_ident()
        with self._lock:
            if self._freed:
                raise NotFound(f"the model {self.path} was unloaded")
            self._users[me] = self._users.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._users[me] -= 1
                if not self._users[me]:
                    del self._users[me]
                    self._no_users.notify_all()

    def free(self) -> None:
        """Stop the engine (what still runs fails), wait for callers inside a C call on the
        model (using()), free the model, give the memory back. Idempotent; never call it on
        the engine's own thread. A caller's thread that frees the model while it uses it (a
        callback) does not wait for itself: its own call then finds the model closed."""
        me = threading.get_ident()
        with self._lock:
            if self._freed:
                return
            self._freed = True
        try:
            self.engine.close()
            with self._lock:
                self._no_users.wait_for(lambda: not (self._users.keys() - {me}))
            self.model.close()
        finally:
            self._reservation.release()
        log.info("freed model %s", self.path)
