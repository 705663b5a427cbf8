"""Embedding jobs: token lists -> one vector each (a matrix per text with pooling ``none``).

A graph loaded with ``embedding: true`` gets an embedding Context (contexts.py) instead of a
generating one; its engine thread alone runs these jobs (EmbeddingEngine.embed, embedding.py,
posts them). Jobs that arrive together are served together: their texts are packed, in order,
into as few decodes as fit, each text in its own sequence, at most n_seq_max texts and ``limit``
tokens per decode. ``limit`` is min(n_ctx, n_ubatch), so a decode is one llama.cpp micro-batch
and every text is pooled whole (llama.cpp pools per micro-batch; non-causal models also assert
n_tokens <= n_ubatch). The KV is unified: with one stream per sequence llama.cpp cuts texts of
unequal lengths into equal parts per micro-batch, which breaks pooling. Identical token lists in
one flush are decoded once (and so get identical vectors). After each decode every sequence it
used is removed (llama_memory_seq_rm): nothing is held between decodes, so a text's vector never
depends on an earlier job, and is bit-identical whenever it is decoded with the same neighbours.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..config import ModelSettings
from ..core.embedding import normalize, pack
from ..errors import BackendRuntimeError, InvalidArgument, PromptTooLong, WasiNnError
from ..llm.batch import Batch
from ..llm.context import Context
from ..llm.embeddings import pooled, token
from .counters import EngineCounters

log = logging.getLogger("wasi_nn_backend.engine")


@dataclass
class EmbedJob:
    texts: list[list[int]]
    future: Future = field(default_factory=Future)


def check_texts(token_lists: list[list[int]], limit: int) -> None:
    """InvalidArgument for an empty text, PromptTooLong for one over ``limit`` tokens."""
    for index, tokens in enumerate(token_lists):
        if not tokens:
            raise InvalidArgument(f"text {index} is empty (no tokens)")
        if len(tokens) > limit:
            raise PromptTooLong(f"text {index} has {len(tokens)} tokens; this embedding graph "
                                f"takes at most {limit} per text (min of n_ctx and n_ubatch)")


class Embedder:
    """Not thread-safe: the engine thread submits, flushes and closes."""

    def __init__(self, context: Context, settings: ModelSettings, counters: EngineCounters) -> None:
        self.context = context
        self.pooling = context.pooling
        self.limit = min(context.n_ubatch, context.n_ctx, settings.n_ctx)
        # deterministic: one text per decode, so a vector never depends on its neighbours.
        self.max_texts = 1 if settings.deterministic else context.n_seq_max
        self.normalize = settings.normalize
        self.counters = counters
        self.batch = Batch(self.limit)
        self.pending: list[EmbedJob] = []

    def submit(self, job: EmbedJob) -> None:
        if job.future.set_running_or_notify_cancel():  # False: cancelled while queued
            self.pending.append(job)

    def flush(self) -> None:
        """Serve every pending job; each one's future gets its vectors or its error."""
        jobs, self.pending = self.pending, []
        try:
            self._serve(jobs)
        except Exception:  # a bug: fail the jobs rather than strand their callers
            log.exception("embedding failed")
            self.fail(jobs, BackendRuntimeError("embedding failed unexpectedly (see the log)"))

    def _serve(self, jobs: list[EmbedJob]) -> None:
        unique: dict[tuple[int, ...], int] = {}
        for job in jobs:
            for tokens in job.texts:
                unique.setdefault(tuple(tokens), len(unique))
        texts = list(unique)
        results: list[np.ndarray | WasiNnError] = [BackendRuntimeError("not computed")] * len(texts)
        for group in pack([len(t) for t in texts], max_tokens=self.limit,
                          max_texts=self.max_texts):
            try:
                vectors: list = self._decode([texts[i] for i in group])
            except WasiNnError as error:
                vectors = [error] * len(group)
            for index, vector in zip(group, vectors):
                results[index] = vector
        for job in jobs:
            answers = [results[unique[tuple(tokens)]] for tokens in job.texts]
            error = next((a for a in answers if isinstance(a, WasiNnError)), None)
            if error is None:
                job.future.set_result(answers)
            else:
                job.future.set_exception(error)

    def _decode(self, texts: list[tuple[int, ...]]) -> list[np.ndarray]:
        batch, context = self.batch, self.context
        batch.clear()
        spans = []
        for seq, tokens in enumerate(texts):
            spans.append((batch.n_tokens, len(tokens)))
            batch.add_sequence(tokens, 0, seq, logits_all=True)
        began = time.perf_counter()
        try:
            code = context.decode(batch)
            if code != 0:
                raise BackendRuntimeError(f"llama_decode failed with code {code} on "
                                          f"{len(texts)} texts ({batch.n_tokens} tokens)")
            if self.pooling == "none":
                raw = [np.stack([token(context, start + i) for i in range(length)])
                       for start, length in spans]
            else:
                raw = [pooled(context, seq) for seq in range(len(texts))]
        finally:
            for seq in range(len(texts)):
                context.seq_rm(seq)
        counters = self.counters
        counters.embed_seconds += time.perf_counter() - began
        counters.embed_decodes += 1
        counters.embedded_texts += len(texts)
        counters.embedded_tokens += batch.n_tokens
        vectors = [normalize(vector, self.normalize) for vector in raw]
        if not all(np.isfinite(vector).all() for vector in vectors):
            raise BackendRuntimeError("the model produced a non-finite embedding")
        return vectors

    @staticmethod
    def fail(jobs: list[EmbedJob], error: WasiNnError) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    def close(self, error: WasiNnError) -> None:
        """Fail what is still pending (the engine is stopping); idempotent."""
        jobs, self.pending = self.pending, []
        self.fail(jobs, error)
        self.batch.close()
