"""StepPlan and KvAction: the only currency from core to engine.

The core decides; the engine performs. Each KvAction names C work on one session's sequence
and the bookkeeping that goes with it; the engine applies both or neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import WasiNnError
from .request import Request, SequenceState


@dataclass(frozen=True)
class Evict:
    """Drop the whole sequence of an idle session and free its slot (re-prefilled on next use)."""

    session: SequenceState
    seq_id: int


@dataclass(frozen=True)
class Trim:
    """Keep the first ``keep`` tokens of the sequence, remove the rest (prefix reuse)."""

    session: SequenceState
    keep: int


@dataclass(frozen=True)
class Shift:
    """Context shift: remove tokens [keep, keep+discard) and move the rest left by ``discard``."""

    session: SequenceState
    keep: int
    discard: int


@dataclass(frozen=True)
class Offload:
    """Save an idle session's sequence to host RAM (engine/offload.py), then free its slot."""

    session: SequenceState
    seq_id: int


@dataclass(frozen=True)
class Restore:
    """Restore an offloaded session's sequence into ``seq_id`` (bit-exact; no re-prefill)."""

    session: SequenceState
    seq_id: int


@dataclass(frozen=True)
class CopyPrefix:
    """Fill ``session``'s (empty) sequence with ``source``'s first len(tokens) tokens (seq_cp)
    instead of prefilling them: a shared system prompt is computed once."""

    session: SequenceState
    source: SequenceState
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Move:
    """Move a resident session's whole sequence from slot ``src`` to the free slot ``dst``,
    bit-exact (one KV stream per sequence: llama.cpp decodes every run of consecutive busy sequence ids
    as a separate ubatch, so closing a gap saves a pass over the weights per step)."""

    session: SequenceState
    src: int
    dst: int


KvAction = Evict | Trim | Shift | Offload | Restore | CopyPrefix | Move


@dataclass
class StepPlan:
    kv_actions: list[KvAction] = field(default_factory=list)
    decode: list[Request] = field(default_factory=list)              # one token each
    prefill: list[tuple[Request, int]] = field(default_factory=list) # (request, tokens this step)
    failed: list[tuple[Request, WasiNnError]] = field(default_factory=list)
    context_full: list[Request] = field(default_factory=list)        # shifting off, no room
    steady: bool = False  # the last step's decode again, nothing else (core/steady.py)
    # Deterministic mode: the decode has this many rows, one per KV slot at its seq id, the
    # slots not decoding given a dummy token (removed after): every decode the same shape.
    fixed_rows: int = 0

    @property
    def empty(self) -> bool:
        return not (self.kv_actions or self.decode or self.prefill or self.failed
                    or self.context_full)
