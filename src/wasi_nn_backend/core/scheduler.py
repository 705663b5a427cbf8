"""Admission and the per-step choice of work. Never sees the model.

Each step: admit waiting requests (up to max_concurrent, one per session, each needs a KV slot),
then pack ONE batch: a token for every generating request first, then prompt chunks of
prefilling requests until n_batch tokens.
"""
from __future__ import annotations

from collections import deque

from ..config import BackendSettings, MemoryConfig
from ..errors import WasiNnError
from .clock import Clock
from .kv_policy import SlotPool, plan_generation_room, plan_prompt
from .plan import StepPlan
from .session import Request, RequestState


class Scheduler:
    def __init__(self, *, n_batch: int, n_ctx: int, pool: SlotPool, settings: BackendSettings,
                 memory: MemoryConfig, can_shift: bool, clock: Clock) -> None:
        self.n_batch = n_batch
        self.n_ctx = n_ctx
        self.pool = pool
        self.settings = settings
        self.memory = memory
        self.can_shift = can_shift
        self.clock = clock
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._rotation = 0  # round-robin start when more generate than fit one batch

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def submit(self, request: Request) -> None:
        request.state = RequestState.WAITING
        self.waiting.append(request)

    def remove(self, request: Request) -> None:
        """Forget a request (finished, failed or cancelled); its session becomes idle."""
        if request in self.running:
            self.running.remove(request)
            request.session.busy = False
            request.session.last_used = self.clock.now()
        elif request in self.waiting:
            self.waiting.remove(request)
        request.state = RequestState.DONE

    def plan(self) -> StepPlan:
        plan = StepPlan()
        self._admit(plan)
        self._plan_decode(plan)
        self._plan_prefill(plan)
        return plan

    def _admit(self, plan: StepPlan) -> None:
        for request in list(self.waiting):
            if len(self.running) >= self.settings.max_concurrent:
                return
            if request.session.busy:
                continue  # one request per session at a time, in order
            actions = self.pool.acquire(request.session)
            if actions is None:
                return  # every slot is busy: wait for one
            plan.kv_actions.extend(actions)
            self.waiting.remove(request)
            try:
                prompt, reuse, prompt_actions = plan_prompt(
                    request.session, request.prompt_tokens, n_ctx=self.n_ctx, memory=self.memory,
                    can_shift=self.can_shift, truncate_ok=request.truncate_ok)
            except WasiNnError as error:
                request.state = RequestState.DONE
                plan.failed.append((request, error))
                continue
            plan.kv_actions.extend(prompt_actions)
            request.prompt_tokens = prompt
            request.n_past = reuse
            request.reused = reuse
            request.state = RequestState.PREFILL
            request.started_at = self.clock.now()
            request.session.busy = True
            self.running.append(request)

    def _plan_decode(self, plan: StepPlan) -> None:
        generating = [r for r in self.running if r.state is RequestState.GENERATING]
        if len(generating) > self.n_batch:
            start = self._rotation % len(generating)
            generating = (generating[start:] + generating[:start])[:self.n_batch]
            self._rotation += self.n_batch
        for request in generating:
            try:
                shift = plan_generation_room(request.session, n_ctx=self.n_ctx,
                                             memory=self.memory, can_shift=self.can_shift)
            except LookupError:
                plan.context_full.append(request)
                continue
            if shift is not None:
                plan.kv_actions.append(shift)
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
