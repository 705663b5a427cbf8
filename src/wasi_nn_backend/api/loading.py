"""The steps of a load, shared by Backend.load and Backend.replace_model: check the path and config and
make the key that finds an identical graph; when there is none, read the GGUF header and
estimate the footprint (before anything is loaded, so a bad file or a model over the memory
limit costs nothing and disturbs nothing), then reserve memory and load."""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from .budget import MemoryBudget
from ..config import Config, parse_config
from ..core.clock import Clock
from ..engine.footprint import Footprint
from ..engine.loader import GgufHeader, estimate_footprint, read_gguf_header, start_model
from ..errors import InvalidArgument
from .models import LoadedModel, ModelKey, model_key

log = logging.getLogger("wasi_nn_backend")

Progress = Callable[[float], Any]
T = TypeVar("T")


@dataclass
class LoadRequest:
    path: str
    config: Config
    key: ModelKey | None        # None: never shared (a model given as bytes, or not stat-able)
    progress: Progress | None = None

    @functools.cached_property
    def header(self) -> GgufHeader:
        """Read only when something is to be loaded (a load that finds its graph never does):
        ModelNotFound, InvalidEncoding."""
        return read_gguf_header(self.path)

    @functools.cached_property
    def footprint(self) -> Footprint:
        return estimate_footprint(self.header, self.config.model)


def prepare(path: Any, config: Any, base: Config, *, share: bool = True,
            progress: Progress | None = None) -> LoadRequest:
    """InvalidArgument / InvalidEncoding for a bad path or config."""
    if path is None or (isinstance(path, (str, bytes)) and len(path) == 0):
        raise InvalidArgument("a model path is required")
    try:
        path = os.fsdecode(path)
    except TypeError:
        raise InvalidArgument(f"a model path must be text, not {type(path).__name__}") from None
    if "\0" in path:
        raise InvalidArgument("the model path contains a NUL character")
    graph_config, _ = parse_config(config, base=base)  # warnings are logged by the parser
    limit = base.memory.max_model_memory_mb
    if graph_config.memory.max_model_memory_mb != limit:
        log.warning("memory.max_model_memory_mb applies from the backend's config (%d); a "
                    "load config cannot change it", limit)
    key = model_key(path, graph_config) if share else None
    return LoadRequest(path, graph_config, key, progress)


def open_loaded(request: LoadRequest, budget: MemoryBudget, *, clock: Clock, name: str
                ) -> LoadedModel:
    """Read the header (ModelNotFound, InvalidEncoding), reserve the footprint (TooLarge over
    the limit), load, start the engine."""
    reservation = budget.reserve(request.footprint, request.path)
    try:
        started = start_model(request.path, request.header, request.config, clock=clock,
                              name=name, progress=request.progress)
    except BaseException:
        reservation.release()
        raise
    n_ctx, n_ctx_train = request.config.model.n_ctx, started.facts["n_ctx_train"]
    if n_ctx > n_ctx_train > 0:
        log.warning("n_ctx %d exceeds the model's training context %d", n_ctx, n_ctx_train)
    return LoadedModel(request.path, request.config, started, request.footprint, request.key,
                       reservation)


class SingleFlight:
    """Calls with equal keys that overlap run once: the first runs ``fn``, the others wait for
    its result (or its exception)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}

    def run(self, key: Hashable, fn: Callable[[], T]) -> T:
        with self._lock:
            future = self._running.get(key)
            mine = future is None
            if mine:
                future = self._running[key] = Future()
        if not mine:
            return future.result()
        try:
            result = fn()
            future.set_result(result)
            return result
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            with self._lock:
                del self._running[key]
