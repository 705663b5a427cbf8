"""Packing a step's plan into the one llama batch (engine thread only). A step that repeats
the last one's decode does not pack: core/steady.py rewrites the kept batch's tokens."""
from __future__ import annotations

from ..core.plan import StepPlan
from ..core.request import Request
from ..core.steady import Outputs
from ..llm.batch import Batch


class BatchPacker:
    def __init__(self, n_batch: int) -> None:
        self.batch = Batch(n_batch)

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
        return outputs

    def close(self) -> None:
        self.batch.close()
