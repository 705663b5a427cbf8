"""The generating engine: one thread per loaded model that alone touches the model's Context,
Batch and Samplers. Public methods are thread-safe: they post commands to the inbox (base.py)
and return a Stream.

step = plan -> kv actions -> fill ONE batch -> decode -> sample -> stop checks -> emit
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import Future

from ..config import Config, RequestParams
from ..core.clock import Clock
from ..core.slots import SlotPool
from ..core.plan import StepPlan
from ..core.scheduler import Scheduler
from ..core.steady import Outputs
from ..core.request import FinishReason, Request, RequestState, SequenceState
from ..core.text import TextAssembler
from ..errors import (BackendRuntimeError, ErrorCode, InvalidArgument, UnsupportedOperation,
                      WasiNnError)
from ..llm.grammar import GrammarRejected
from ..llm.model import Model
from ..llm.sampler import Sampler
from .base import EngineBase, EngineReadings
from .backend_samplers import BackendSamplers
from .contexts import defers_output, generation_context, samples_in_graph
from .gate import QueueGate
from .kv_apply import KvApplier
from .live import LiveRequest
from .packing import BatchPacker
from .streams import Stream
from .offload import OffloadStore
from .sampling_pool import SamplingPool, pick_tokens

log = logging.getLogger("wasi_nn_backend.engine")
SAMPLING_THREADS = 4   # at most: past a few threads a step's chains are too few to split


class GeneratingEngine(EngineBase):
    def __init__(self, model: Model, config: Config, *, clock: Clock | None = None,
                 name: str = "model") -> None:
        super().__init__(model, config, clock=clock, name=name)
        settings = config.model
        self.context = generation_context(model, settings, self.threads)
        n_batch = self.context.n_batch  # llama.cpp caps n_batch at the context size
        self.packer = BatchPacker(n_batch)
        memory = config.memory
        self.pool = SlotPool(settings.n_seq_max, offload=memory.max_memory_mb > 0,
                             strategy=memory.cache_strategy,
                             deletion_strategy=memory.cache_deletion_strategy)
        self.gate = QueueGate.from_settings(config.backend)  # entered on callers' threads
        self.scheduler = Scheduler(
            n_batch=n_batch, n_ctx=settings.n_ctx, pool=self.pool,
            settings=config.backend, memory=config.memory, can_shift=self.context.can_shift(),
            clock=self.clock, deterministic=settings.deterministic,
            compact=not self.context.kv_unified, gate=self.gate)
        self.offload = OffloadStore(memory.max_memory_mb * 1024 * 1024)
        self.kv = KvApplier(self.context, self.offload, self.counters)
        self._live: dict[Request, LiveRequest] = {}
        self._with_deadline = 0  # live requests that have a deadline
        self._next_deadline = math.inf  # no live request's deadline is earlier (maybe later)
        self._unwoken: list[Stream] = []  # streams with pieces their readers were not woken for
        # Asynchronous output: a step's text is emitted after the next llama_decode was
        # launched (on a GPU it returns at once and computes while we detokenize).
        self._defer = defers_output(settings)
        # Backend sampling: chains that can run inside llama_decode's graph do.
        self._in_graph = samples_in_graph(settings)
        self.backend_samplers = BackendSamplers(self.context)
        self._deferred: list[LiveRequest] = []  # sampled, text not yet emitted
        # Sampler chains of one step on up to 4 threads (this one and the workers).
        workers = min(self.threads, SAMPLING_THREADS) - 1
        self._sampling = SamplingPool(workers, name) if workers > 0 else None
        self.start()

    # -- thread-safe API ---------------------------------------------------------------------
    def submit(self, session: SequenceState, prompt_tokens: list[int], params: RequestParams,
               *, truncate_ok: bool = False, started_at: float | None = None) -> Stream:
        """Queue a generation on ``session``; its output arrives on the returned Stream.
        ``started_at`` (the clock's time when the caller began the request, before
        tokenizing it) is when its deadline starts counting; default now."""
        if not prompt_tokens:
            raise InvalidArgument("the prompt is empty (no tokens)")
        now = self.clock.now() if started_at is None else started_at
        timeout_ms = params.timeout_ms
        if timeout_ms is None:
            timeout_ms = self.config.backend.default_task_timeout_ms
        request = Request(session=session, prompt_tokens=list(prompt_tokens), params=params,
                          truncate_ok=truncate_ok, submitted_at=now,
                          deadline=now + timeout_ms / 1000 if timeout_ms else None)
        stream = Stream(cancel=lambda: self._post_quietly(lambda: self._cancel(request)))
        live = LiveRequest(request, stream, TextAssembler(params.stopping.stop))
        self.gate.enter()  # Busy at once, on the caller's thread, when full
        try:
            self._post(lambda: self._admit(live))
        except BaseException:
            self.gate.leave()
            raise
        return stream

    def embed(self, token_lists: list[list[int]]) -> Future:
        raise UnsupportedOperation("this graph generates text; load the model with "
                                   "embedding: true to compute embeddings")

    @property
    def embed_limit(self) -> int:
        """The most tokens one text may have for embed: n_ctx on a generating graph."""
        return self.n_ctx

    def close_session(self, session: SequenceState) -> Future:
        """Stop the session's requests and free its KV sequence; the future resolves when done."""
        return self.call(lambda: self._drop_session(session))

    def kv_cells(self) -> tuple[int, int]:
        """(cells holding session tokens, cells in the context) — a reading, not a lock."""
        used = sum(len(s.kv_tokens) for s in self.pool.resident)
        return used, self.n_ctx * self.pool.n_slots

    def readings(self) -> EngineReadings:
        used, total = self.kv_cells()
        return EngineReadings(self.counters.snapshot(), self.scheduler.stats(), used, total,
                              self.offload.bytes_used)

    # -- engine thread -----------------------------------------------------------------------
    def _has_work(self) -> bool:
        return self.scheduler.has_work

    def _before_wait(self) -> None:
        if self._deferred and not self.scheduler.has_work:
            self._emit_deferred()
        if self._unwoken and not self.scheduler.has_work:
            self._wake_readers()  # no decode is coming to wake them

    def _after_commands(self) -> None:
        if self.scheduler.has_work:
            self._step()

    def _release(self, error: WasiNnError) -> None:
        self._emit_deferred()
        for live in list(self._live.values()):
            self._fail(live.request, error)
        if self._sampling is not None:
            self._sampling.close()
        self.backend_samplers.clear()
        self.packer.close()
        self.context.close()

    def _wake_readers(self) -> None:
        """Wake the readers of the pieces sampled since the last call. Called just before
        llama_decode (which releases the GIL, so they find it free and wake once) and before
        the engine waits for work."""
        streams, self._unwoken = self._unwoken, []
        for stream in streams:
            stream.wake()

    def _admit(self, live: LiveRequest) -> None:
        self._live[live.request] = live
        deadline = live.request.deadline
        if deadline is not None:
            self._with_deadline += 1
            self._next_deadline = min(self._next_deadline, deadline)
        self.scheduler.submit(live.request)

    def _cancel(self, request: Request) -> None:
        if request in self._live:
            self._finish(request, FinishReason.CANCELLED, ErrorCode.SUCCESS)

    def _drop_session(self, session: SequenceState) -> None:
        for request in [r for r in self._live if r.session is session]:
            self._finish(request, FinishReason.CANCELLED, ErrorCode.SUCCESS)
        session.closed = True
        self.offload.discard(session)
        self.kv.apply_all(self.pool.release(session))

    def _step(self) -> None:
        self._expire_deadlines()
        plan = self.scheduler.plan()
        steady = self.scheduler.steady  # the last step's decode again (core/steady.py)
        outputs = steady.repack(plan, self.packer.batch.retoken)
        if outputs is not None:
            self.counters.steady_steps += 1
        else:
            outputs = self._prepare(plan)
            steady.packed(outputs)
        self._wake_readers()
        batch = self.packer.batch
        if batch.n_tokens == 0:
            self._emit_deferred()
            return
        if self._in_graph:
            self._attach_samplers()
        result = self.context.decode(batch)
        self.counters.decode_seconds = self.context.decode_seconds
        for seq_id, position in self.packer.dummies:   # deterministic mode's fixed shape
            self.context.seq_rm(seq_id, position, -1)
        if result != 0:
            self._emit_deferred()
            self._decode_failed(result, plan)
            return
        self._commit(plan)
        if self._deferred:
            self._emit_deferred()   # the last step's text, while this step computes
            self._wake_readers()    # sampling waits for the logits with the GIL released
        self._sample(outputs)

    def _attach_samplers(self) -> None:
        """Live requests whose chain can sample in the graph do, at their sequence's id."""
        wanted = {}
        for request, live in self._live.items():
            sampler, seq = live.sampler, request.session.seq_id
            if sampler is not None and sampler.backend and seq is not None:
                wanted[seq] = sampler
        self.backend_samplers.sync(wanted)

    def _emit_deferred(self) -> None:
        """Emit the text of the tokens sampled last step (asynchronous output); a stop
        string found in it ends its request now, its next token decoded for nothing."""
        deferred, self._deferred = self._deferred, []
        for live in deferred:
            if self._live.get(live.request) is live:
                reason = live.emit(self.model, self._unwoken)
                if reason is not None:
                    self._finish(live.request, reason, ErrorCode.SUCCESS)

    def _prepare(self, plan: StepPlan) -> Outputs:
        """Carry out a plan up to its batch: failures, KV actions, samplers, the batch."""
        for request, error in plan.failed:
            self._fail(request, error)
        for request in plan.context_full:
            self._finish(request, FinishReason.LENGTH, ErrorCode.CONTEXT_FULL)
        for session in self.kv.apply_all(plan.kv_actions):
            self._restart_prefill(session)
        plan.decode = [r for r in plan.decode if r in self._live]
        self._start_samplers(plan)
        slot_ends = ({s.seq_id: len(s.kv_tokens) for s in self.pool.resident
                      if s.seq_id is not None} if plan.fixed_rows else None)
        return self.packer.pack(plan, slot_ends)

    def _restart_prefill(self, session: SequenceState) -> None:
        """Its sequence could not be restored (restore, prefix copy or move failed): an
        admitted request prefills its whole prompt; a generating one cannot go on."""
        for request in list(self._live):
            if request.session is not session:
                continue
            if request.state is RequestState.PREFILL:
                request.n_past = request.reused = 0
            elif request.state is RequestState.GENERATING:
                self._fail(request, BackendRuntimeError(
                    "the session's KV sequence was lost while it generated"))

    def _start_samplers(self, plan: StepPlan) -> None:
        for request, _ in plan.prefill:
            live = self._live[request]
            if live.sampler is not None:
                continue
            try:
                live.sampler = Sampler(self.model, request.params.sampling, n_ctx=self.n_ctx,
                                       backend=self._in_graph)
                live.sampler.accept_prompt(request.prompt_tokens)
            except WasiNnError as error:
                self._fail(request, error)
        plan.prefill = [(r, n) for r, n in plan.prefill if r in self._live]

    def _commit(self, plan: StepPlan) -> None:
        for request in plan.decode:
            request.session.kv_tokens.append(request.pending_token)
            request.pending_token = None
        self.counters.decode_tokens += len(plan.decode)
        for request, count in plan.prefill:
            start = request.n_past
            request.session.kv_tokens.extend(request.prompt_tokens[start:start + count])
            request.n_past += count
            request.prefilled += count
            request.session.prefilled_tokens += count
            self.counters.prefill_tokens += count
        self.counters.steps += 1

    def _sample(self, outputs: Outputs) -> None:
        now = self.clock.now()
        picking: list[tuple[Request, int, LiveRequest]] = []
        for request, index in outputs:
            live = self._live.get(request)
            if live is None:   # a stop string in its last text ended it (_emit_deferred)
                continue
            if request.state is RequestState.PREFILL:
                request.state = RequestState.GENERATING
                request.session.reused_tokens += request.reused
                self.counters.reused_tokens += request.reused
                if request.params.stopping.max_tokens == 0:
                    self._finish(request, FinishReason.LENGTH, ErrorCode.SUCCESS)
                    continue
            picking.append((request, index, live))
        picks = [(index, live.sampler) for _, index, live in picking]
        for (request, index, live), (token, error) in zip(
                picking, pick_tokens(self._sampling, self.context, picks)):
            if error is not None:
                if not isinstance(error, WasiNnError):
                    raise error   # a bug: the engine fails (base.py)
                if isinstance(error, GrammarRejected) and error.complete:
                    # the grammar matched a whole text: nothing more to say
                    self._finish(request, FinishReason.STOP, ErrorCode.SUCCESS)
                else:   # this request's sampler failed: the others go on
                    self._fail(request, error)
                continue
            if request.params.sampling.n_probs:
                request.probs.append(tuple(live.sampler.top_probs(
                    self.context, index, request.params.sampling.n_probs)))
            reason = live.on_token(self.model, token, now, self._unwoken, defer=self._defer)
            if reason is not None:
                self._finish(request, reason, ErrorCode.SUCCESS)
            elif live.unsent is not None:
                self._deferred.append(live)

    def _decode_failed(self, result: int, plan: StepPlan) -> None:
        """llama_decode did not succeed: roll every sequence in the batch back to what we
        recorded, then free room (result 1: no KV cell) or fail the batch's requests."""
        # live ones: _emit_deferred may have finished one (a stop string) just before
        involved = [r for r in plan.decode + [r for r, _ in plan.prefill] if r in self._live]
        for request in involved:
            session = request.session
            self.context.seq_rm(session.seq_id, len(session.kv_tokens), -1)
        idle = [s for s in self.pool.resident if not s.busy]
        if result == 1 and idle:
            victim = min(idle, key=lambda s: s.last_used)
            log.warning("KV cache full: evicting idle session %d", victim.session_id)
            self.kv.apply_all(self.pool.release(victim))
            return
        error = BackendRuntimeError(
            "KV cache full" if result == 1 else f"llama_decode failed with code {result}")
        for request in involved:
            self._fail(request, error)

    def _expire_deadlines(self) -> None:
        """Requests past their deadline end with timeout: queued ones (auto_queue_cleanup)
        and running ones, whose partial output stays readable."""
        if not self._with_deadline:
            return
        now = self.clock.now()
        if now < self._next_deadline:  # nothing to look at this step
            return
        for request in self.scheduler.expire_waiting(now):
            self._finish(request, FinishReason.TIMEOUT, ErrorCode.TIMEOUT)
        for request in [r for r in self.scheduler.running
                        if r.deadline is not None and r.deadline <= now]:
            self._finish(request, FinishReason.TIMEOUT, ErrorCode.TIMEOUT)
        self._next_deadline = min((r.deadline for r in self._live if r.deadline is not None),
                                  default=math.inf)

    def _finish(self, request: Request, reason: FinishReason, code: ErrorCode) -> None:
        live = self._live.pop(request)
        if live.emit(self.model, self._unwoken) is not None:   # its deferred text ended it:
            reason, code = FinishReason.STOP, ErrorCode.SUCCESS   # a stop string, as if sooner
        self._with_deadline -= request.deadline is not None
        self.scheduler.remove(request)
        # Counters first: completing wakes the caller, who may read them at once.
        self.counters.finished += 1
        self.counters.timeouts += reason is FinishReason.TIMEOUT
        self.counters.cancelled += reason is FinishReason.CANCELLED
        self.backend_samplers.release(live.sampler)   # before complete() frees its chain
        live.complete(reason, code, self.clock)

    def _fail(self, request: Request, error: WasiNnError) -> None:
        live = self._live.get(request)
        if live is not None and live.emit(self.model, self._unwoken) is not None:
            # its deferred text completed a stop string: without deferral it had ended there
            self._finish(request, FinishReason.STOP, ErrorCode.SUCCESS)
            return
        live = self._live.pop(request, None)
        self._with_deadline -= live is not None and request.deadline is not None
        self.scheduler.remove(request)
        self.counters.failed += 1
        if live is not None:
            self.backend_samplers.release(live.sampler)
            live.close_sampler()
            live.stream.fail(error, at=self.clock.now())
