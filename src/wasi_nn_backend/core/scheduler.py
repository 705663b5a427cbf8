"""Admission and the per-step choice of work. Never sees the model.

Each step: admit waiting requests (up to max_concurrent, one per session, each needs a KV slot;
in the order core/queue.py's WaitingQueue gives: priority, then fairness between sessions,
then arrival), then pack ONE batch: a token for every generating request first, then prompt
chunks of prefilling requests until n_batch tokens.

The waiting queue is bounded by ``gate`` (core/queue.py's QueueLimit; the engine passes one
under a lock, engine/gate.py): callers enter() it on their own thread before posting a request
to the engine, and the Scheduler calls ``gate.leave()``
exactly once for each request that leaves the waiting queue, in these methods only:
  - plan()           a request taken for admission (admitted, or failed at admission);
  - remove()         a request that was still waiting (cancelled, session closed, failed);
  - expire_waiting() each request it returns (deadline passed while waiting).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import BackendSettings, MemoryConfig
from ..errors import WasiNnError
from .clock import Clock
from .kv_policy import (MIN_PREFIX_COPY, common_prefix, held_prefix, plan_generation_room,
                        plan_pressure_relief, plan_prompt)
from .slots import SlotPool
from .plan import CopyPrefix, StepPlan, Restore
from .queue import Gate, QueueLimit, WaitingQueue
from .steady import SteadyDecode
from .request import Request, RequestState, SequenceState


def _drop_restore(plan: StepPlan, session: SequenceState) -> None:
    """A prefix copy replaces the whole sequence: restoring the session's offloaded state
    first would be wasted (and the restore would be checked against the copy's tokens).
    The engine drops the saved bytes when it copies."""
    plan.kv_actions[:] = [action for action in plan.kv_actions
                          if not (isinstance(action, Restore) and action.session is session)]


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot. submitted_total == waiting + admitted_total + failed_total + expired_total
    + cancelled_total; rejected_total and queue_warnings_total come from the gate."""

    waiting: int                # in the waiting queue now
    running: int                # admitted, not yet removed
    submitted_total: int        # entered the waiting queue (submit())
    admitted_total: int         # left it to run
    failed_total: int           # left it at admission with an error (prompt too long, ...)
    expired_total: int          # left it through expire_waiting() (deadline passed)
    cancelled_total: int        # left it through remove() while still waiting
    rejected_total: int         # refused by gate.enter() with Busy
    queue_warnings_total: int   # times the queue reached queue_warning_threshold
    queue_peak: int             # most requests waiting at once (queued or on their way)

    @classmethod
    def zero(cls) -> SchedulerStats:
        """The stats of a queue nothing ever entered (an embedding engine has none)."""
        return cls(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


class Scheduler:
    def __init__(self, *, n_batch: int, n_ctx: int, pool: SlotPool, settings: BackendSettings,
                 memory: MemoryConfig, can_shift: bool, clock: Clock,
                 deterministic: bool = False, compact: bool = False,
                 gate: Gate | None = None) -> None:
        self.n_batch = n_batch
        # One KV stream per sequence: keep the busy sequences' ids consecutive (pool.compact).
        self.compact = compact and not deterministic
        # Steps of a canonical shape (_plan_fixed): what a request computes never depends on
        # what else runs (llama.cpp picks kernels by batch size). A sequence keeps one cell
        # free for the dummy token its slot gets while it does not decode.
        self.deterministic = deterministic
        # a prefix copied from another session would cut the prompt's prefill into other
        # chunks than alone: deterministic mode prefills from the session's own cache only
        self._copies_prefixes = memory.enable_token_cache_reuse and not deterministic
        self.n_ctx = n_ctx - 1 if deterministic else n_ctx
        self.pool = pool
        self.settings = settings
        self.memory = memory
        self.can_shift = can_shift
        self.clock = clock
        self.gate: Gate = gate if gate is not None else QueueLimit.from_settings(settings)
        self.queue = WaitingQueue(priority=settings.priority_scheduling_enabled,
                                  fair=settings.fair_scheduling_enabled,
                                  track_deadlines=settings.auto_queue_cleanup)
        self.running: list[Request] = []
        self._rotation = 0  # round-robin start when more generate than fit one batch
        # While every running request just decodes, the last plan again (core/steady.py).
        self.steady = SteadyDecode(n_ctx=n_ctx, pool=pool, memory=memory,
                                   deterministic=deterministic)
        self._submitted_total = 0
        self._admitted_total = 0
        self._failed_total = 0
        self._expired_total = 0
        self._cancelled_total = 0
        self._peak = 0

    @property
    def waiting(self) -> list[Request]:
        """The waiting requests in arrival order (a copy)."""
        return list(self.queue)

    @property
    def has_work(self) -> bool:
        return bool(self.queue or self.running)

    def submit(self, request: Request) -> None:
        """Queue ``request`` (engine thread). Never refuses: the gate did that on the caller's
        thread."""
        request.state = RequestState.WAITING
        self.queue.push(request)
        self._submitted_total += 1
        self._peak = max(self._peak, len(self.queue))

    def remove(self, request: Request) -> None:
        """Forget a request (finished, failed or cancelled); its session becomes idle."""
        self.steady.forget()
        if request in self.running:
            self.running.remove(request)
            request.session.busy = False
            request.session.last_used = self.clock.now()
        elif self._leave(request):
            self._cancelled_total += 1
        request.state = RequestState.DONE

    def expire_waiting(self, now: float | None = None) -> list[Request]:
        """With auto_queue_cleanup on: remove the waiting requests whose deadline is <= now
        and return them, for the engine to finish with a timeout. Off: always []; expired
        requests then wait until admitted and the engine's deadline check ends them."""
        if not self.settings.auto_queue_cleanup:
            return []
        expired = self.queue.pop_expired(self.clock.now() if now is None else now)
        for request in expired:
            self.gate.leave()
            request.state = RequestState.DONE
        self._expired_total += len(expired)
        return expired

    def stats(self) -> SchedulerStats:
        """Counters; cheap, and safe to read from any thread (a snapshot may be a step old)."""
        return SchedulerStats(
            waiting=len(self.queue), running=len(self.running),
            submitted_total=self._submitted_total, admitted_total=self._admitted_total,
            failed_total=self._failed_total, expired_total=self._expired_total,
            cancelled_total=self._cancelled_total, rejected_total=self.gate.rejected_total,
            queue_warnings_total=self.gate.warnings_total,
            queue_peak=max(self._peak, self.gate.peak))

    def _leave(self, request: Request, *, served: bool = False) -> bool:
        if not self.queue.remove(request, served=served):
            return False
        self.gate.leave()
        return True

    def plan(self) -> StepPlan:
        """The next step: the last one again while it is steady (core/steady.py), else a full
        plan."""
        plan = self.steady.repeat(waiting=bool(self.queue), running=len(self.running))
        if plan is not None:
            return plan
        plan = self._plan()
        self.steady.consider(plan, self.running)
        return plan

    def _plan(self) -> StepPlan:
        plan = StepPlan()
        self._admit(plan)
        plan.kv_actions.extend(plan_pressure_relief(
            self.pool, n_ctx=self.n_ctx, memory=self.memory, can_shift=self.can_shift))
        if self.deterministic:
            self._plan_fixed(plan)
        else:
            self._plan_decode(plan)
            self._plan_prefill(plan)
            if self.compact and not plan.kv_actions:  # only beside no other KV work
                plan.kv_actions.extend(self.pool.compact())
        return plan

    def _admit(self, plan: StepPlan) -> None:
        if len(self.running) >= self.settings.max_concurrent or not self.queue:
            return  # the common case in a busy step: O(1)
        # One request per session at a time, each session's in order: only heads of idle
        # sessions are candidates.
        held = 0   # requests waiting for a prefix: their places are kept for them
        room = min(self.settings.max_concurrent, self.pool.n_slots)
        for request in self.queue.admission_order(lambda session: not session.busy):
            if len(self.running) >= self.settings.max_concurrent:
                return
            if held and len(self.running) + held >= room:
                return   # a later request would take the place a waiting one will need
            if self._copies_prefixes and self._prefix_on_its_way(request):
                held += 1   # admitted once the prefix is in the KV cache: it copies it then
                continue
            actions = self.pool.acquire(request.session, wanted=self.queue.has_waiting)
            if actions is None:
                return  # every slot is busy: wait for one
            plan.kv_actions.extend(actions)
            self._leave(request, served=True)
            try:
                prompt, reuse, prompt_actions = plan_prompt(
                    request.session, request.prompt_tokens, n_ctx=self.n_ctx, memory=self.memory,
                    can_shift=self.can_shift, truncate_ok=request.truncate_ok,
                    donors=self.pool.resident if self._copies_prefixes else None)
            except WasiNnError as error:
                request.state = RequestState.DONE
                plan.failed.append((request, error))
                self._failed_total += 1
                continue
            if any(isinstance(action, CopyPrefix) for action in prompt_actions):
                _drop_restore(plan, request.session)
            plan.kv_actions.extend(prompt_actions)
            request.prompt_tokens = prompt
            request.n_past = reuse
            request.reused = reuse
            request.state = RequestState.PREFILL
            request.started_at = self.clock.now()
            request.session.busy = True
            self.running.append(request)
            self._admitted_total += 1

    def _prefix_on_its_way(self, request: Request) -> bool:
        """Whether a running request is prefilling a prefix of this one's prompt that no
        cache holds yet, MIN_PREFIX_COPY tokens or more beyond what its session or another
        would give it now: then it waits (a step or a few: until that prefill passes the
        shared part) and copies the prefix instead of prefilling it beside. Sessions opened
        at once with the same system prompt prefill it once, not once each."""
        prompt = request.prompt_tokens
        head = prompt[:MIN_PREFIX_COPY]
        ahead = [r for r in self.running if r.state is RequestState.PREFILL
                 and r.prompt_tokens[:MIN_PREFIX_COPY] == head]
        if not ahead:
            return False
        held = held_prefix(request.session, prompt, self.pool.resident)
        for other in ahead:
            shared = common_prefix(other.prompt_tokens, prompt)
            if shared >= held + MIN_PREFIX_COPY and other.n_past < shared:
                return True
        return False

    def _plan_fixed(self, plan: StepPlan) -> None:
        """Deterministic mode: a step is either ONE prompt chunk of one request, alone, cut at
        n_batch from where its prefill starts (so the same prompt is cut the same way whatever
        waits beside it), or a decode of every generating request with one row per KV slot
        (StepPlan.fixed_rows: the same shape whoever runs). When both are due, prompts go
        first while fewer than half the slots would decode, then they take turns.
        A request's numbers then depend on its own inputs only (tests/engine/
        test_deterministic.py)."""
        prefilling = [r for r in self.running if r.state is RequestState.PREFILL
                      and len(r.prompt_tokens) > r.n_past]
        generating = [r for r in self.running if r.state is RequestState.GENERATING]
        self._rotation += 1
        # A decode costs every slot's row, dummies too: while fewer than half the slots would
        # decode, prompts go first; then the two take turns.
        if prefilling and (2 * len(generating) < self.pool.n_slots or self._rotation % 2):
            request = prefilling[0]   # the longest waiting: running is in admission order
            plan.prefill.append((request, min(self.n_batch, len(request.prompt_tokens)
                                               - request.n_past)))
            return
        for request in generating:
            if self._room_for_token(request, plan):
                plan.decode.append(request)
        if plan.decode:
            plan.fixed_rows = self.pool.n_slots

    def _room_for_token(self, request: Request, plan: StepPlan) -> bool:
        """Plan a context shift if one is needed; False (and context_full) if impossible."""
        try:
            shift = plan_generation_room(request.session, n_ctx=self.n_ctx,
                                         memory=self.memory, can_shift=self.can_shift)
        except LookupError:
            plan.context_full.append(request)
            return False
        if shift is not None:
            plan.kv_actions.append(shift)
        return True

    def _plan_decode(self, plan: StepPlan) -> None:
        generating = [r for r in self.running if r.state is RequestState.GENERATING]
        if len(generating) > self.n_batch:
            start = self._rotation % len(generating)
            generating = (generating[start:] + generating[:start])[:self.n_batch]
            self._rotation += self.n_batch
        for request in generating:
            if self._room_for_token(request, plan):
                plan.decode.append(request)

    def _plan_prefill(self, plan: StepPlan) -> None:
        budget = self.n_batch - len(plan.decode)
        for request in self.running:
            if budget <= 0:
                return
            if request.state is not RequestState.PREFILL:
                continue
            n = min(budget, len(request.prompt_tokens) - request.n_past)
            if n > 0:
                plan.prefill.append((request, n))
                budget -= n
