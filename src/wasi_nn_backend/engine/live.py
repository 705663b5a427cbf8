"""A request while it runs: its sampler, its text assembler and its stream, and the stop checks
done for each sampled token."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.clock import Clock
from ..core.request import Completion, FinishReason, Request
from ..core.text import TextAssembler
from ..errors import ErrorCode
from ..llm.model import Model
from ..llm.sampler import Sampler
from .streams import Stream


@dataclass(eq=False)
class LiveRequest:
    request: Request
    stream: Stream
    text: TextAssembler
    sampler: Sampler | None = None

    def on_token(self, model: Model, token: int, now: float,
                 unwoken: list[Stream]) -> FinishReason | None:
        """Record a sampled token, emit its text; the reason to stop, if any. The stream's
        readers are not woken: the stream goes on ``unwoken`` for the engine to wake."""
        request = self.request
        request.generated.append(token)
        request.session.generated_tokens += 1
        request.pending_token = token
        if request.first_token_at is None:
            request.first_token_at = now
        stopping = request.params.stopping
        if model.is_eog(token) and not request.params.sampling.ignore_eos:
            return FinishReason.STOP
        if self.stream.put(self.text.feed(model.token_to_piece(token)), wake=False):
            unwoken.append(self.stream)
        if self.text.stopped_by is not None:
            return FinishReason.STOP
        if 0 <= stopping.max_tokens <= len(request.generated):
            return FinishReason.LENGTH
        if stopping.max_time_ms and request.started_at is not None \
                and (now - request.started_at) * 1000 >= stopping.max_time_ms:
            return FinishReason.TIME
        return None

    def complete(self, reason: FinishReason, code: ErrorCode, clock: Clock) -> Completion:
        """Release held text and build the Completion (the stream gets it too)."""
        request = self.request
        self.stream.put(self.text.finish())
        final = list(request.session.kv_tokens)
        if request.pending_token is not None:
            final.append(request.pending_token)
        now = clock.now()
        completion = Completion(
            text=self.text.text,
            finish_reason=reason,
            code=code,
            prompt_tokens=len(request.prompt_tokens),
            reused_tokens=request.reused,
            prefilled_tokens=request.prefilled,
            generated_tokens=tuple(request.generated),
            final_tokens=tuple(final),
            stopped_by=self.text.stopped_by,
            probs=tuple(request.probs),
            seconds=now - request.submitted_at,
            first_token_seconds=((request.first_token_at or now) - request.submitted_at),
            finished_at=now,
        )
        self.stream.finish(completion)
        self.close_sampler()
        return completion

    def close_sampler(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
