"""The step's tokens, picked on more than one core: llama.cpp's sampler chains run in C with the
GIL released (ctypes), so the chains of one step's sequences can run on a few threads at once.

Why: a sampled token (top-k, top-p, min-p, temperature, dist) costs ~50 us of C work over a
32,000-token vocabulary, one sequence after another on the engine thread, while the cores that
just ran llama_decode sit idle (bench/scale.py). Each chain is its own sampler with its own
RNG, and it reads the context's logits only, so the token a chain picks does not depend on
which thread runs it or on what runs beside it: the results are those of one thread.

What runs here: only samplers whose sample() is one C call (Sampler.releases_gil: no grammar,
not the numpy greedy path, which holds the GIL). llama.cpp reorders a decode's outputs on the
first read of its logits, so the engine reads them once (Context.logits_view) before the
chains start. Everything else of a step (stop checks, text, streams) stays on the engine
thread, in batch order.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import WasiNnError

if TYPE_CHECKING:
    from ..llm.context import Context
    from ..llm.sampler import Sampler

T = TypeVar("T")
Outcome = tuple[Any, BaseException | None]   # (result, None) or (None, the exception)


def _call(fn: Callable[[T], Any], item: T) -> Outcome:
    try:
        return fn(item), None
    except BaseException as error:   # handed back to the engine thread, in order
        return None, error


class SamplingPool:
    """``workers`` threads beside the caller's; map() splits its items between them all.
    Not thread-safe: one caller (the engine thread)."""

    def __init__(self, workers: int, name: str) -> None:
        self._cond = threading.Condition()
        self._work: list[tuple[Callable[[Any], Any], Sequence[Any]] | None] = [None] * workers
        self._done: list[list[Outcome] | None] = [None] * workers
        self._closed = False
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"{name}-sampling-{i}") for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def map(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Outcome]:
        """``fn(item)`` for every item, the first parts on the workers and the last on this
        thread; the outcomes in the items' order."""
        parts = min(len(self._threads) + 1, len(items))
        if parts <= 1 or self._closed:
            return [_call(fn, item) for item in items]
        size, extra = divmod(len(items), parts)
        bounds, start = [], 0
        for part in range(parts):
            end = start + size + (part < extra)
            bounds.append((start, end))
            start = end
        with self._cond:
            for worker, (lo, hi) in enumerate(bounds[:-1]):
                self._done[worker] = None
                self._work[worker] = (fn, items[lo:hi])
            self._cond.notify_all()
        lo, hi = bounds[-1]
        mine = [_call(fn, item) for item in items[lo:hi]]
        outcomes: list[Outcome] = []
        with self._cond:
            busy = range(parts - 1)
            self._cond.wait_for(lambda: all(self._done[w] is not None for w in busy))
            for worker in busy:
                outcomes += self._done[worker]   # type: ignore[operator]
                self._done[worker] = None
        return outcomes + mine

    def _run(self, worker: int) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._work[worker] is not None or self._closed)
                if self._closed:
                    return
                fn, items = self._work[worker]   # type: ignore[misc]
                self._work[worker] = None
            done = [_call(fn, item) for item in items]
            with self._cond:
                self._done[worker] = done
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the workers (idempotent); map() then runs everything on its caller."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()


def pick_tokens(pool: SamplingPool | None, context: Context,
                picks: list[tuple[int, Sampler]]) -> list[Outcome]:
    """For each (batch index, sampler), the next token from the logits at that index (or the
    WasiNnError the sampler raised: GrammarRejected, or a failure of that sampler), in order.
    Fast-greedy samplers share one argmax; the samplers that are one C call go to ``pool``
    when there are two or more; the others run here."""
    outcomes: list[Outcome | None] = [None] * len(picks)
    _greedy_together(context, picks, outcomes)
    pooled = ([i for i, (_, sampler) in enumerate(picks)
               if sampler.releases_gil and outcomes[i] is None] if pool is not None else [])
    if len(pooled) >= 2:
        context.logits_view(picks[pooled[0]][0])   # llama.cpp reorders the outputs here
        done = pool.map(lambda pick: pick[1].sample(context, pick[0]),
                        [picks[i] for i in pooled])
        for i, outcome in zip(pooled, done):
            outcomes[i] = outcome
    for i, (index, sampler) in enumerate(picks):
        if outcomes[i] is None:
            try:
                outcomes[i] = (sampler.sample(context, index), None)
            except WasiNnError as error:   # GrammarRejected, or a failure of this one
                outcomes[i] = (None, error)
    return outcomes


def _greedy_together(context: Context, picks: list[tuple[int, Sampler]],
                     outcomes: list[Outcome | None]) -> None:
    """The fast-greedy samplers' picks from one argmax over their rows (a numpy call for
    the step instead of one a sequence), each then checked against its logit_bias."""
    greedy = [i for i, (_, sampler) in enumerate(picks)
              if sampler.fast_greedy and sampler.model is context.model]
    if len(greedy) < 2:
        return
    matrix, rows = context.logits_matrix([picks[i][0] for i in greedy])
    whole = len(rows) == len(matrix) and rows == list(range(len(matrix)))
    best = (matrix if whole else matrix[rows]).argmax(axis=1).tolist()
    for i, row, first in zip(greedy, rows, best):
        outcomes[i] = (picks[i][1].greedy_from(matrix[row], first), None)
