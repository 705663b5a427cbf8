"""Which sampler chain the context runs inside llama_decode's graph for which KV sequence
(model.backend_sampling): on a GPU the logits then never leave it; a step's token is read
back instead (Sampler.sample when ``attached``).

Before each decode the engine says where every live backend-capable sampler is (``sync``:
seq id -> sampler); only changes reach llama.cpp (each rebuilds its graph at the next decode).
A chain can be set up for the graph once in its life (llama.cpp asserts), and once set up it
skips those samplers when run on the host: a sampler whose sequence moved to another id
(compaction) goes on with a clone of its chain (Sampler.rechain: same state, RNG included),
attached at the new id. A sampler is detached (``release``) before its chain is freed: the
context holds only a borrowed pointer. One owner: the engine thread.
"""
from __future__ import annotations

import logging

from ..llm.context import Context
from ..llm.sampler import Sampler

log = logging.getLogger("wasi_nn_backend.engine")


class BackendSamplers:
    def __init__(self, context: Context) -> None:
        self._context = context
        self._attached: dict[int, Sampler] = {}   # seq id -> the sampler set there

    @property
    def attached(self) -> dict[int, Sampler]:
        return dict(self._attached)

    def sync(self, wanted: dict[int, Sampler]) -> None:
        """Make the context sample with exactly ``wanted`` (seq id -> sampler): the live
        requests' backend samplers at their sequences now."""
        if wanted == self._attached:
            return
        for seq, sampler in list(self._attached.items()):
            if wanted.get(seq) is not sampler:
                self._detach(seq)
                if not sampler.closed:   # it moved, or waits: it goes on with a fresh chain
                    sampler.rechain()
        for seq, sampler in wanted.items():
            if seq in self._attached or sampler.attached:
                continue   # already there, or set on another sequence until detached above
            if self._context.set_sampler(seq, sampler.chain):
                self._attached[seq] = sampler
                sampler.attached = True
            else:
                log.debug("sequence %d samples on the host: llama.cpp cannot run its chain "
                          "in the graph", seq)

    def release(self, sampler: Sampler | None) -> None:
        """Detach ``sampler`` wherever it is set (before its chain is freed)."""
        if sampler is None or not sampler.attached:
            return
        for seq, held in list(self._attached.items()):
            if held is sampler:
                self._detach(seq)

    def clear(self) -> None:
        for seq in list(self._attached):
            self._detach(seq)

    def _detach(self, seq: int) -> None:
        sampler = self._attached.pop(seq)
        sampler.attached = False
        self._context.set_sampler(seq, None)
