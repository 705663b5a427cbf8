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

    unsent: int | None = None   # a sampled token whose text is not emitted yet (defer=True)
    covered: int = 0            # generated tokens whose text a piece carried (n_probs only)

    def on_token(self, model: Model, token: int, now: float, unwoken: list[Stream], *,
                 defer: bool = False) -> FinishReason | None:
        """Record a sampled token, emit its text; the reason to stop, if any. The stream's
        readers are not woken: the stream goes on ``unwoken`` for the engine to wake.
        ``defer``: leave the text for emit() (the engine's asynchronous output, after the
        next llama_decode is under way) unless the request stops here anyway; a stop string
        in it then ends the request one token late (that token decoded for nothing)."""
        request = self.request
        request.generated.append(token)
        request.session.generated_tokens += 1
        request.pending_token = token
        if request.first_token_at is None:
            request.first_token_at = now
        stopping = request.params.stopping
        if model.is_eog(token) and not request.params.sampling.ignore_eos:
            return FinishReason.STOP
        self.unsent = token
        reason = None
        if 0 <= stopping.max_tokens <= len(request.generated):
            reason = FinishReason.LENGTH
        elif stopping.max_time_ms and request.started_at is not None \
                and (now - request.started_at) * 1000 >= stopping.max_time_ms:
            reason = FinishReason.TIME
        if defer and reason is None:
            return None
        return self.emit(model, unwoken) or reason

    def emit(self, model: Model, unwoken: list[Stream]) -> FinishReason | None:
        """Put the text of the unsent token on the stream (held back while it may be the
        start of a stop string); STOP when a stop string completed."""
        token, self.unsent = self.unsent, None
        if token is None:
            return None
        text = self.text.feed(model.token_to_piece(token))
        if self.stream.put(text, wake=False, tokens=self._covers(text)):
            unwoken.append(self.stream)
        return FinishReason.STOP if self.text.stopped_by is not None else None

    def _covers(self, text: str) -> tuple:
        """The tokens a piece of ``text`` completes, with their probabilities: those since
        the last piece (their text was held back until now). Only when n_probs is asked."""
        request = self.request
        if not text or not request.probs:
            return ()
        start, self.covered = self.covered, len(request.generated)
        return tuple(zip(request.generated[start:], request.probs[start:]))

    def complete(self, reason: FinishReason, code: ErrorCode, clock: Clock) -> Completion:
        """Release held text and build the Completion (the stream gets it too). The engine
        emits the unsent token's text first (a stop string in it changes the reason)."""
        request = self.request
        held = self.text.finish()
        self.stream.put(held, tokens=self._covers(held))
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
