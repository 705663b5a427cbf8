"""The steady-step shortcut: the last step's decode again, without planning or packing.

Why: in a long generation most steps look alike. Nothing waits, every running request
generates, and each step decodes one token for each of them. A full step spends Python time
on every request (admission, pressure relief, a room check each, KV actions, samplers to
start, the batch filled token by token) only to build the same batch as the step before with
new tokens in it. That time is what a step costs beyond llama_decode, so it is skipped while
nothing of it could change the outcome.

How (SteadyDecode, one per Scheduler; the only code that knows of the shortcut):

1. consider(plan): after a full plan (Scheduler.plan), a plan that only decodes, and decodes
   every running request (no KV action, no prefill, no failure, no context_full, and not
   deterministic mode, which decodes one request per step), starts a run. It may be repeated
   ``room`` times: until the first of its sequences could need a context shift
   (kv_policy.plan_generation_room shifts once len + 1 > n_ctx, and each step adds a token),
   and ``headroom`` times: until the caches could pass the memory-pressure limit (they grow by
   one token per request per step), where pressure relief must look again.
2. packed(outputs): the engine packed that plan's batch; the run keeps its outputs (each
   request with the batch index of its logits).
3. repeat(): while the run lasts, nothing waits and as many requests run as it decodes,
   Scheduler.plan() returns the same decode list marked ``steady`` (StepPlan.steady) without
   looking at a request. The engine then calls repack(): each request's new token and position
   are written into the same batch (Batch.retoken, passed in as ``retoken``) and the kept
   outputs come back; the engine skips KV actions, samplers and packing, decodes, and counts
   the step in EngineCounters.steady_steps.
4. The run ends, and the next plan is a full one, when a request is removed (finished, failed,
   cancelled: forget(), from Scheduler.remove), when one waits, or when room or headroom is
   spent. A decode that fails leaves the run as it was: the next steady step decodes the same
   tokens at the same positions again, as a full plan would.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import MemoryConfig
from .kv_policy import cached_tokens, pressure_limit
from .slots import SlotPool
from .plan import StepPlan
from .request import Request

Outputs = list[tuple[Request, int]]  # (request, batch index of its logits)


@dataclass
class _Run:
    decode: list[Request]        # the plan's decode list, in the scheduler's order
    room: int                    # repeats before a sequence may need a context shift
    headroom: int                # repeats before the caches may pass the pressure limit
    outputs: Outputs | None = None  # the batch the engine packed for it


class SteadyDecode:
    """Not thread-safe: the engine thread plans, packs and repacks."""

    def __init__(self, *, n_ctx: int, pool: SlotPool, memory: MemoryConfig,
                 deterministic: bool) -> None:
        self.n_ctx = n_ctx
        self.pool = pool
        self.memory = memory
        self.deterministic = deterministic
        self._run: _Run | None = None

    def repeat(self, *, waiting: bool, running: int) -> StepPlan | None:
        """The run's plan again (steady), or None (and the run ends): a full plan is due."""
        run = self._run
        if run is not None and not waiting and running == len(run.decode) \
                and run.room > 0 and run.headroom > 0:
            run.room -= 1
            run.headroom -= 1
            return StepPlan(decode=list(run.decode), steady=True)
        self._run = None
        return None

    def consider(self, plan: StepPlan, running: list[Request]) -> None:
        """Start a run with a full ``plan`` if it may be repeated (see the module's step 1)."""
        self._run = None
        if self.deterministic or plan.kv_actions or plan.prefill or plan.failed \
                or plan.context_full or not plan.decode or len(plan.decode) != len(running):
            return
        # Room: one more token each step, no shift while len + 1 <= n_ctx (plan_generation_room).
        room = min(self.n_ctx - len(r.session.kv_tokens) for r in plan.decode) - 1
        # Pressure: the caches grow by one token per request per step.
        spare = pressure_limit(self.pool, n_ctx=self.n_ctx, memory=self.memory) \
            - cached_tokens(self.pool)
        self._run = _Run(list(plan.decode), room, spare // len(plan.decode) - 1)

    def forget(self) -> None:
        """A request left: the next plan is a full one."""
        self._run = None

    def packed(self, outputs: Outputs) -> None:
        """The engine packed the batch of the last plan: keep it for the run, if one started."""
        if self._run is not None:
            self._run.outputs = outputs

    def repack(self, plan: StepPlan,
               retoken: Callable[[int, int, int], None]) -> Outputs | None:
        """For a steady ``plan``: write each request's new token and position into the kept
        batch through ``retoken(index, token, position)`` and return its outputs. None when
        ``plan`` is not steady or no batch was kept for it: the engine packs one."""
        run = self._run
        outputs = run.outputs if run is not None else None
        if not plan.steady or outputs is None or len(outputs) != len(plan.decode):
            return None
        for request, index in outputs:
            retoken(index, request.pending_token, len(request.session.kv_tokens))
        return outputs
