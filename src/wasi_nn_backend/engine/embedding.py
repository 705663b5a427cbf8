"""The embedding engine: a graph loaded with ``embedding: true`` computes vectors, never text.

It holds an embedding Context and an Embedder (embedder.py) and nothing a generating engine
needs (no scheduler, KV slots, offload store or samplers): nothing stays in its KV between
decodes. Its thread runs the embed jobs posted to it; every job that arrives with one wake-up
is served in one flush, so calls made together share decodes.
"""
from __future__ import annotations

from concurrent.futures import Future

from ..config import Config, RequestParams
from ..core.clock import Clock
from ..core.scheduler import SchedulerStats
from ..core.request import SequenceState
from ..errors import UnsupportedOperation, WasiNnError
from ..llm.model import Model
from .base import EngineBase, EngineReadings
from .contexts import embedding_context
from .embedder import EmbedJob, Embedder, check_texts
from .streams import Stream


class EmbeddingEngine(EngineBase):
    def __init__(self, model: Model, config: Config, *, clock: Clock | None = None,
                 name: str = "model") -> None:
        super().__init__(model, config, clock=clock, name=name)
        self.context = embedding_context(model, config.model, self.threads)
        self.embedder = Embedder(self.context, config.model, self.counters)
        self.start()

    # -- thread-safe API ---------------------------------------------------------------------
    def submit(self, session: SequenceState, prompt_tokens: list[int], params: RequestParams,
               *, truncate_ok: bool = False, started_at: float | None = None) -> Stream:
        raise UnsupportedOperation(
            "this graph was loaded with embedding: true: it computes embeddings (compute, "
            "session.embed), not text; load the model without it to generate")

    def embed(self, token_lists: list[list[int]]) -> Future:
        """One vector per token list (float32 arrays) on the Future, computed together with
        other jobs that arrive meanwhile (embedder.py). InvalidArgument / PromptTooLong for a
        text that is empty or too long."""
        check_texts(token_lists, self.embedder.limit)
        job = EmbedJob([list(tokens) for tokens in token_lists])
        self._post(lambda: self.embedder.submit(job))
        return job.future

    @property
    def embed_limit(self) -> int:
        """The most tokens one text may have for embed: min(n_ctx, n_ubatch)."""
        return self.embedder.limit

    def close_session(self, session: SequenceState) -> Future:
        """Nothing of a session is held here: mark it closed, on the engine thread as a
        generating engine does (the future resolves after the jobs posted before it)."""
        return self.call(lambda: setattr(session, "closed", True))

    def kv_cells(self) -> tuple[int, int]:
        return 0, 0  # nothing is held between embedding decodes

    def readings(self) -> EngineReadings:
        return EngineReadings(self.counters.snapshot(), SchedulerStats.zero())

    # -- engine thread -----------------------------------------------------------------------
    def _after_commands(self) -> None:
        if self.embedder.pending:
            self.embedder.flush()  # every job that arrived with this wake-up, together

    def _release(self, error: WasiNnError) -> None:
        self.embedder.close(error)
        self.context.close()
