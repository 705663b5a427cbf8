"""Packing a step's plan into the one llama batch (engine thread only), and repacking it when
a step repeats the last one's decode."""
from __future__ import annotations

from ..core.plan import StepPlan
from ..core.session import Request
from ..llm.batch import Batch

Outputs = list[tuple[Request, int]]  # (request, batch index of its logits)


class BatchPacker:
    def __init__(self, n_batch: int) -> None:
        self.batch = Batch(n_batch)
        self._last: Outputs | None = None  # the last pack, if it only decoded

    def pack(self, plan: StepPlan) -> Outputs:
        """One batch, its sequences in increasing seq_id order: with one KV stream per
        sequence llama.cpp puts a run of consecutive ids in one ubatch and splits at every
        other boundary (each ubatch is a full pass over the weights)."""
        batch = self.batch
        batch.clear()
        outputs: Outputs = []
        work: list[tuple[int, Request, int | None]] = [
            (r.session.seq_id, r, None) for r in plan.decode]
        work += [(r.session.seq_id, r, count) for r, count in plan.prefill]
        work.sort(key=lambda item: item[0])
        for seq_id, request, count in work:
            if count is None:  # a decode token
                index = batch.add(request.pending_token, len(request.session.kv_tokens),
                                  seq_id, True)
                outputs.append((request, index))
                continue
            start = request.n_past
            ends_prompt = start + count == len(request.prompt_tokens)
            index = batch.add_sequence(request.prompt_tokens[start:start + count], start,
                                       seq_id, logits_last=ends_prompt)
            if ends_prompt:
                outputs.append((request, index))
        self._last = None if plan.prefill else outputs
        return outputs

    def repack(self, plan: StepPlan) -> Outputs | None:
        """A steady plan (the last decode again, nothing else): the last batch with each
        request's new token and position. None when the last pack was not that decode."""
        outputs = self._last
        if not plan.steady or outputs is None or len(outputs) != len(plan.decode):
            return None
        for request, index in outputs:
            self.batch.retoken(index, request.pending_token, len(request.session.kv_tokens))
        return outputs

    def close(self) -> None:
        self.batch.close()
