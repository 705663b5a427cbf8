"""What both kinds of engine share: one thread per loaded model that alone touches the model's
Context, an inbox of commands other threads post to it, and the way it stops.

A generating graph gets a GeneratingEngine (generating.py: scheduler, KV slots, samplers), an
embedding graph an EmbeddingEngine (embedding.py: embed jobs only); loader.start_engine picks
one from ``config.model.embedding``. Both offer the same surface to the API layer: what one
kind cannot do raises UnsupportedOperation, what it does not hold reads as zero.

The loop: while the engine has work (``_has_work``) and no command waits, it steps without
taking the lock; otherwise it waits for a command, runs every command that came with the
wake-up, then ``_after_commands`` (a step, or one flush of the embedding jobs that arrived).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..config import Config, SamplingParams
from ..config.limits import GGML_MAX_N_THREADS
from ..core.clock import Clock, MonotonicClock
from ..core.scheduler import SchedulerStats
from ..errors import BackendRuntimeError, NotFound, WasiNnError
from ..llm.context import Context
from ..llm.grammar import check_grammar
from ..llm.model import Model
from .counters import EngineCounters

log = logging.getLogger("wasi_nn_backend.engine")


@dataclass(frozen=True)
class EngineReadings:
    """What backend.stats() reads from one engine, taken without stopping it (numbers that
    change together may be one step apart)."""

    counters: dict[str, int | float]
    queue: SchedulerStats
    kv_cells_used: int = 0       # cells holding session tokens
    kv_cells_total: int = 0      # cells in the context
    offload_bytes: int = 0       # KV state held in host RAM (offload.py)


class EngineBase:
    """The thread and its inbox. Subclasses create ``self.context`` before calling start()."""

    context: Context

    def __init__(self, model: Model, config: Config, *, clock: Clock | None, name: str) -> None:
        self.model = model
        self.config = config
        self.clock = clock or MonotonicClock()
        self.n_ctx = config.model.n_ctx
        self.threads = config.model.threads or min(os.cpu_count() or 1, GGML_MAX_N_THREADS)
        self.counters = EngineCounters()
        self._inbox: deque[Callable[[], Any]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._closed_by_owner = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- thread-safe API ---------------------------------------------------------------------
    def check_sampling(self, sampling: SamplingParams) -> None:
        """Raise InvalidArgument now for a grammar or JSON schema that cannot be used."""
        check_grammar(self.model, sampling)

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the engine thread between steps; its result comes on the Future."""
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to the caller, not swallowed
                future.set_exception(error)
        self._post(run)
        return future

    def close(self) -> None:
        """Stop the thread: its model is being freed (an unload, the last session of a model
        swapped out, the backend closing). Waiting and running requests fail with not_found:
        what they ran on is gone, as the function API documents."""
        with self._cond:
            self._closed_by_owner = True
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()  # the context must be freed before anyone frees the model

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _post(self, command: Callable[[], Any]) -> None:
        with self._cond:
            if self._stopping:
                raise self._gone_error("the model was unloaded")
            self._inbox.append(command)
            self._cond.notify_all()

    def _post_quietly(self, command: Callable[[], Any]) -> None:
        try:
            self._post(command)
        except WasiNnError:
            pass  # closing already fails every request

    # -- engine thread: what a kind fills in --------------------------------------------------
    def _has_work(self) -> bool:
        """Work to step through without waiting for a command."""
        return False

    def _step(self) -> None:
        """One step of that work."""

    def _before_wait(self) -> None:
        """Called before the thread waits for a command."""

    def _after_commands(self) -> None:
        """Called after the commands of one wake-up ran."""

    def _release(self, error: WasiNnError) -> None:
        """Fail what is still held with ``error`` and free the context (the thread stops)."""
        self.context.close()

    # -- engine thread: the loop ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                if not (self._inbox or self._stopping) and self._has_work():
                    self._step()  # busy with no commands: the next step, no lock taken
                    continue
                self._before_wait()
                with self._cond:
                    self._cond.wait_for(lambda: self._inbox or self._stopping
                                        or self._has_work())
                    if self._stopping:
                        break
                    commands = list(self._inbox)
                    self._inbox.clear()
                for command in commands:
                    try:
                        command()
                    except Exception:  # a bug in one command must not strand the others
                        log.exception("engine command failed")
                self._after_commands()
        except BaseException:  # a bug: fail every request rather than hang its waiters
            log.exception("engine thread failed")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            pending, self._inbox = list(self._inbox), deque()
        for command in pending:  # let queued calls resolve (their futures must not hang)
            try:
                command()
            except BaseException:
                log.exception("command failed during shutdown")
        self._release(self._gone_error("the model was unloaded while the request ran"))

    def _gone_error(self, what: str) -> WasiNnError:
        """not_found when the owner closed this engine; a thread that died of a bug is a
        runtime_error (the log has its traceback)."""
        if self._closed_by_owner:
            return NotFound(what)
        return BackendRuntimeError("the model's engine failed (see the log)")
