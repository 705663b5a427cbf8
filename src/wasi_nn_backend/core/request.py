"""Request and sequence state: one object carries each through the engine (nano-vllm habit).

A SequenceState is the engine's state of one KV sequence: the tokens a session holds in it (or
in host RAM while offloaded), its slot, its counters. (api/session.py's Session is what a user
holds; it owns one SequenceState.) A Request is one generation on a sequence: the whole token
list the sequence must hold before generating (prompt_tokens), its parameters, its progress,
and what it ends with (Completion).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..config import RequestParams
from ..errors import ContextFull, ErrorCode, NotFound, Timeout, WasiNnError

_request_ids = itertools.count(1)


class RequestState(Enum):
    WAITING = "waiting"        # queued, holds no KV slot yet
    PREFILL = "prefill"        # prompt tokens going into the KV sequence
    GENERATING = "generating"  # one token per engine step
    DONE = "done"


class FinishReason(str, Enum):
    STOP = "stop"              # end-of-generation token or a stop string
    LENGTH = "length"          # max_tokens, or the context is full with shifting off
    TIME = "time"              # stopping.max_time_ms
    TIMEOUT = "timeout"        # the request's deadline (default_task_timeout_ms / timeout_ms)
    CANCELLED = "cancelled"    # closed or cancelled while running
    ERROR = "error"


@dataclass(eq=False)  # identity: one object per session
class SequenceState:
    """The engine's state of one session's KV sequence."""

    session_id: int
    seq_id: int | None = None                              # KV slot while resident
    kv_tokens: list[int] = field(default_factory=list)     # tokens in the sequence, pos 0..n-1
    offloaded_tokens: list[int] | None = None              # tokens of its state saved in RAM
    cut_from: list[int] | None = None    # kv_tokens before memory pressure cut their middle
    cuts: list[tuple[int, int]] = field(default_factory=list)  # (keep, discard) since then
    last_used: float = 0.0
    busy: bool = False                                     # a request of it is admitted
    closed: bool = False
    prefilled_tokens: int = 0                              # counters over the session's life
    reused_tokens: int = 0
    generated_tokens: int = 0
    shifts: int = 0


@dataclass(frozen=True)
class Completion:
    """What a finished request produced."""

    text: str
    finish_reason: FinishReason
    code: ErrorCode                  # SUCCESS, or CONTEXT_FULL / TIMEOUT with partial text
    prompt_tokens: int               # tokens in the prompt as given
    reused_tokens: int               # of those, already in the KV sequence (not prefilled)
    prefilled_tokens: int            # prompt tokens decoded for this request
    generated_tokens: tuple[int, ...]
    final_tokens: tuple[int, ...]    # the sequence's tokens at the end (+ last sampled token)
    stopped_by: str | None = None
    probs: tuple[tuple[tuple[int, float], ...], ...] = ()
    seconds: float = 0.0
    first_token_seconds: float = 0.0
    finished_at: float = 0.0         # on the engine's clock

    def __str__(self) -> str:
        return self.text

    def error(self) -> WasiNnError | None:
        """Why this generation did not finish as asked, as the error the function API and the
        adapters report (its text stays readable); None when it did."""
        partial = f"after {len(self.generated_tokens)} tokens; the output so far is readable"
        if self.code is ErrorCode.CONTEXT_FULL:
            return ContextFull(f"the context is full and context shifting is off ({partial})")
        if self.code is ErrorCode.TIMEOUT:
            return Timeout(f"the request passed its deadline ({partial})")
        if self.finish_reason is FinishReason.CANCELLED:
            return NotFound(f"the execution context was closed while it generated ({partial})")
        return None

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt_tokens,
            "output_tokens": len(self.generated_tokens),
            "cached_tokens": self.reused_tokens,
            "prefilled_tokens": self.prefilled_tokens,
            "finish_reason": self.finish_reason.value,
            "stopped_by": self.stopped_by,
            "seconds": round(self.seconds, 6),
        }


@dataclass(eq=False)
class Request:
    session: SequenceState
    prompt_tokens: list[int]
    params: RequestParams
    truncate_ok: bool = False        # chat mode: an over-long prompt may be context-shifted
    submitted_at: float = 0.0
    deadline: float | None = None    # absolute, on the engine's clock
    request_id: int = field(default_factory=lambda: next(_request_ids))
    state: RequestState = RequestState.WAITING
    n_past: int = 0                  # prompt tokens already in the KV sequence
    pending_token: int | None = None # sampled, not yet decoded
    generated: list[int] = field(default_factory=list)
    probs: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    reused: int = 0
    prefilled: int = 0
    started_at: float | None = None
    first_token_at: float | None = None

    @property
    def prompt_done(self) -> bool:
        return self.n_past >= len(self.prompt_tokens)

    @property
    def priority(self) -> str:
        return self.params.priority
