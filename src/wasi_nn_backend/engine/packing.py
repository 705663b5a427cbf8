"""Packing a step's plan into the one llama batch (engine thread only). A step that repeats
the last one's decode does not pack: core/steady.py rewrites the kept batch's tokens."""
from __future__ import annotations

from ..core.plan import StepPlan
from ..core.request import Request
from ..core.steady import Outputs
from ..llm.batch import Batch


DUMMY_TOKEN = 0   # what a fixed-shape row of a slot that does not decode carries


class BatchPacker:
    def __init__(self, n_batch: int) -> None:
        self.batch = Batch(n_batch)
        self.dummies: list[tuple[int, int]] = []   # (seq id, position) of the last pack's

    def pack(self, plan: StepPlan, slot_ends: dict[int, int] | None = None) -> Outputs:
        """One batch, its sequences in increasing seq_id order: with one KV stream per
        sequence llama.cpp puts a run of consecutive ids in one ubatch and splits at every
        other boundary (each ubatch is a full pass over the weights)."""
        batch = self.batch
        batch.clear()
        self.dummies = []
        if plan.fixed_rows:
            return self._pack_fixed(plan, slot_ends or {})
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

    def _pack_fixed(self, plan: StepPlan, slot_ends: dict[int, int]) -> Outputs:
        """Deterministic mode's decode: a row for every slot, in seq id order, each an output;
        a slot that does not decode gets DUMMY_TOKEN at the end of its sequence
        (``slot_ends``: seq id -> its length; 0 for a free slot), which the engine removes
        after the decode. The shape is the same whichever slots decode."""
        decoding = {r.session.seq_id: r for r in plan.decode}
        outputs: Outputs = []
        for seq_id in range(plan.fixed_rows):
            request = decoding.get(seq_id)
            if request is None:
                position = slot_ends.get(seq_id, 0)
                self.batch.add(DUMMY_TOKEN, position, seq_id, True)
                self.dummies.append((seq_id, position))
            else:
                index = self.batch.add(request.pending_token, len(request.session.kv_tokens),
                                       seq_id, True)
                outputs.append((request, index))
        return outputs

    def close(self) -> None:
        self.batch.close()
