"""KV decisions: which sequence slot a session gets, what of its cache is reused, when and how
to shift. Returns plans (KvAction lists); performs nothing.
"""
from __future__ import annotations

from collections.abc import Callable

from ..config import MemoryConfig
from ..errors import PromptTooLong
from .plan import CopyPrefix, Evict, KvAction, Move, Shift, Restore, Offload, Trim

# A prefix shorter than this is prefilled rather than copied: a copy moves a whole KV stream.
MIN_PREFIX_COPY = 16
from .request import SequenceState


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def keep_count(n_ctx: int, memory: MemoryConfig) -> int:
    """Tokens kept at the start on a context shift (capped at half the context so a shift
    always frees a useful amount)."""
    return min(memory.n_keep_tokens, n_ctx // 2)


def discard_count(n_tokens: int, n_keep: int, memory: MemoryConfig, at_least: int = 1) -> int:
    n_left = n_tokens - n_keep
    wanted = memory.n_discard_tokens or n_left // 2
    return max(1, min(max(wanted, at_least), n_left - 1))


class SlotPool:
    """The context's sequence slots. A resident session holds one; an idle one may lose it:
    offloaded to host RAM when ``offload`` is on (restored bit-exact later), else evicted (its
    tokens are prefilled again on its next use)."""

    def __init__(self, n_slots: int, *, offload: bool = False, strategy: str = "lru",
                 deletion_strategy: str = "lru") -> None:
        self.n_slots = n_slots
        self.offload = offload
        # "lru": least recently used first; "fifo": longest resident first ("smart" = lru).
        self.strategy = strategy                    # who gives up a slot to a new session
        self.deletion_strategy = deletion_strategy  # who gives up cells under memory pressure
        self._arrival: dict[int, int] = {}
        self._arrivals = 0
        self._free = list(range(n_slots))
        self._owner: dict[int, SequenceState] = {}

    @property
    def resident(self) -> list[SequenceState]:
        return list(self._owner.values())

    def acquire(self, session: SequenceState,
                wanted: Callable[[SequenceState], bool] | None = None) -> list[KvAction] | None:
        """A slot for ``session``: [] if it has one, [Evict(victim)] (or Offload) if an idle
        session's slot is taken, None if every slot is busy. Idle sessions for which
        ``wanted`` is true (a request of theirs waits) give up their slot last: taking it
        would offload them only to restore them, maybe in this very step."""
        if session.seq_id is not None:
            return []
        actions: list[KvAction] = []
        if self._free:
            seq_id = self._pick_free(session)
        else:
            idle = [s for s in self._owner.values() if not s.busy]
            if not idle:
                return None
            if wanted is not None:
                idle = [s for s in idle if not wanted(s)] or idle
            victim = self._victim(idle)
            seq_id = victim.seq_id
            actions.extend(self._take_back(victim))
        self._assign(session, seq_id)
        if session.offloaded_tokens is not None:
            # Planned as restored; the engine makes it so, or empties the sequence if it can't.
            session.kv_tokens, session.offloaded_tokens = session.offloaded_tokens, None
            actions.append(Restore(session, seq_id))
        return actions

    def release(self, session: SequenceState) -> list[KvAction]:
        """The session is gone: its sequence is dropped and the slot freed."""
        session.offloaded_tokens = None
        if session.seq_id is None:
            return []
        seq_id = session.seq_id
        self._unassign(session)
        self._free.append(seq_id)
        return [Evict(session, seq_id)]

    def give_back(self, session: SequenceState) -> list[KvAction]:
        """An idle session gives up its slot (offloaded or evicted); the slot is free."""
        seq_id = session.seq_id
        assert seq_id is not None and not session.busy
        actions = self._take_back(session)
        self._free.append(seq_id)
        return actions

    def compact(self, max_moves: int = 2) -> list[KvAction]:
        """Moves that put the busy sequences in one run of consecutive ids, if at most
        ``max_moves`` whole-sequence copies do it: idle sessions inside the chosen window go to
        free slots outside it, busy sessions outside it into its free slots. The bookkeeping
        changes now; the engine copies the sequences in this order."""
        busy = sorted(s.seq_id for s in self._owner.values() if s.busy)
        k = len(busy)
        if k < 2 or busy[-1] - busy[0] == k - 1:
            return []
        best: tuple[int, int] | None = None
        for start in range(self.n_slots - k + 1):
            inside = range(start, start + k)
            busy_out = sum(1 for i in busy if i not in inside)
            idle_in = sum(1 for i in inside if i in self._owner and not self._owner[i].busy)
            free_out = sum(1 for i in self._free if i not in inside)
            if idle_in <= free_out and (best is None or busy_out + idle_in < best[0]):
                best = (busy_out + idle_in, start)
        if best is None or best[0] > max_moves:
            return []
        inside = range(best[1], best[1] + k)
        actions: list[KvAction] = []
        idle_in = [i for i in inside if i in self._owner and not self._owner[i].busy]
        for src, dst in zip(idle_in, sorted(i for i in self._free if i not in inside)):
            actions.append(self._move(src, dst))
        busy_out = [i for i in busy if i not in inside]
        for src, dst in zip(busy_out, sorted(i for i in inside if i not in self._owner)):
            actions.append(self._move(src, dst))
        return actions

    def _move(self, src: int, dst: int) -> Move:
        session = self._owner.pop(src)
        self._free.remove(dst)
        self._free.append(src)
        self._owner[dst] = session
        session.seq_id = dst
        return Move(session, src, dst)

    def _pick_free(self, session: SequenceState) -> int:
        """The free slot that keeps the busy sequences' ids in the fewest runs of consecutive
        ids (lowest id on ties): with one KV stream per sequence llama.cpp decodes each run
        as a separate ubatch, a separate pass over the weights."""
        busy = {s.seq_id for s in self._owner.values() if s.busy and s is not session}

        def runs(slot: int) -> int:
            ids = busy | {slot}
            return sum(1 for i in ids if i - 1 not in ids)
        best = min(self._free, key=lambda slot: (runs(slot), slot))
        self._free.remove(best)
        return best

    def victims(self) -> list[SequenceState]:
        """Idle resident sessions, the first to give up KV first (cache_deletion_strategy)."""
        idle = [s for s in self._owner.values() if not s.busy]
        return sorted(idle, key=self._order(self.deletion_strategy))

    def _take_back(self, victim: SequenceState) -> list[KvAction]:
        seq_id = victim.seq_id
        assert seq_id is not None
        if self.offload and victim.kv_tokens:
            victim.offloaded_tokens = victim.kv_tokens
            action: KvAction = Offload(victim, seq_id)
        else:
            victim.cut_from, victim.cuts = None, []  # nothing left to map a prompt onto
            action = Evict(victim, seq_id)
        self._unassign(victim)
        return [action]

    def _victim(self, idle: list[SequenceState]) -> SequenceState:
        return min(idle, key=self._order(self.strategy))

    def _order(self, strategy: str):
        if strategy == "fifo":
            return lambda s: self._arrival[s.session_id]
        return lambda s: s.last_used

    def _unassign(self, session: SequenceState) -> None:
        # The bookkeeping changes here, at planning time, so that a later decision in the same
        # plan sees the session as empty; the engine only clears the sequence.
        assert session.seq_id is not None
        del self._owner[session.seq_id]
        self._arrival.pop(session.session_id, None)
        session.seq_id = None
        session.kv_tokens = []

    def _assign(self, session: SequenceState, seq_id: int) -> None:
        self._arrivals += 1
        self._arrival[session.session_id] = self._arrivals
        session.seq_id = seq_id
        self._owner[seq_id] = session


def plan_prompt(session: SequenceState, prompt: list[int], *, n_ctx: int, memory: MemoryConfig,
                can_shift: bool, truncate_ok: bool, donors: list[SequenceState] | None = None
                ) -> tuple[list[int], int, list[KvAction]]:
    """Fit ``prompt`` into the session's sequence: (prompt as it will be held, tokens reused,
    actions). Over-long chat prompts are context-shifted when allowed; else PromptTooLong.
    With ``donors`` (memory.enable_token_cache_reuse), a prefix another resident session
    holds is copied instead of prefilled."""
    donors = donors or []
    prompt = _map_through_cuts(session, prompt, truncate_ok)
    room = n_ctx - 1  # at least one token must be generated
    kv = session.kv_tokens
    lcp = common_prefix(kv, prompt)
    actions: list[KvAction] = []
    if len(prompt) > room:
        if not (truncate_ok and memory.context_shifting and can_shift):
            raise PromptTooLong(f"prompt has {len(prompt)} tokens; the context holds {n_ctx} "
                                f"per session (at most {room} for a prompt)")
        n_keep = keep_count(n_ctx, memory)
        discard = discard_count(len(prompt), n_keep, memory, at_least=len(prompt) - room)
        if len(prompt) - discard > room:
            raise PromptTooLong(f"prompt has {len(prompt)} tokens; even after dropping {discard} "
                                f"it does not fit the context of {n_ctx}")
        shifted = prompt[:n_keep] + prompt[n_keep + discard:]
        if lcp > n_keep + discard:
            # The part to drop is already cached: shift the KV instead of re-prefilling.
            if lcp < len(kv):
                actions.append(Trim(session, lcp))
            actions.append(Shift(session, n_keep, discard))
            kv_after = kv[:n_keep] + kv[n_keep + discard:lcp]
        else:
            kv_after = kv
        prompt = shifted
        lcp = common_prefix(kv_after, prompt)
        kv = kv_after
    else:
        copy = _prefix_copy(session, prompt, lcp, donors)
        if copy is not None:
            actions.append(copy)
            kv = session.kv_tokens = list(copy.tokens)  # planned; the engine makes it so
            lcp = len(kv)
    reuse = min(lcp, len(prompt) - 1)
    if reuse < len(kv):
        actions.append(Trim(session, reuse))
    return prompt, reuse, actions


def _map_through_cuts(session: SequenceState, prompt: list[int], truncate_ok: bool
                      ) -> list[int]:
    """A chat prompt that continues a session whose middle was dropped under memory pressure
    is cut the same way (as a context shift would), so its cache still matches."""
    cut_from, cuts = session.cut_from, session.cuts
    session.cut_from, session.cuts = None, []
    if cut_from is None or not truncate_ok or prompt[:len(cut_from)] != cut_from:
        return prompt
    for keep, discard in cuts:
        prompt = prompt[:keep] + prompt[keep + discard:]
    return prompt


def pressure_limit(pool: SlotPool, *, n_ctx: int, memory: MemoryConfig) -> int:
    """The most tokens the resident sessions' caches hold before idle ones give cells back:
    max_cache_tokens, or memory_pressure_threshold of all cells, whichever is less."""
    return min(memory.max_cache_tokens,
               int(memory.memory_pressure_threshold * n_ctx * pool.n_slots))


def cached_tokens(pool: SlotPool) -> int:
    return sum(len(s.kv_tokens) for s in pool.resident)


def plan_pressure_relief(pool: SlotPool, *, n_ctx: int, memory: MemoryConfig,
                         can_shift: bool) -> list[KvAction]:
    """While the sessions' caches hold more than pressure_limit, idle sessions give cells
    back: the oldest part of a long one (enable_partial_cache_deletion), or the whole of it
    (offloaded or evicted)."""
    limit = pressure_limit(pool, n_ctx=n_ctx, memory=memory)
    used = cached_tokens(pool)
    if used <= limit:
        return []  # the common case, every step: no sorting of victims
    actions: list[KvAction] = []
    n_keep = keep_count(n_ctx, memory)
    for victim in pool.victims():
        if used <= limit:
            break
        n_tokens = len(victim.kv_tokens)
        if memory.enable_partial_cache_deletion and can_shift and n_tokens >= 2 * n_keep + 8:
            discard = (n_tokens - n_keep) // 2
            if victim.cut_from is None:
                victim.cut_from = list(victim.kv_tokens)
            victim.cuts.append((n_keep, discard))
            actions.append(Shift(victim, n_keep, discard))
            used -= discard
        else:
            actions.extend(pool.give_back(victim))
            used -= n_tokens
    return actions


def _prefix_copy(session: SequenceState, prompt: list[int], own: int,
                 donors: list[SequenceState]) -> CopyPrefix | None:
    """The resident session whose cache shares the longest prefix with ``prompt``, if that is
    clearly better than what ``session`` holds itself."""
    best, best_len = None, max(own, MIN_PREFIX_COPY - 1)
    for donor in donors:
        if donor is session or donor.seq_id is None:
            continue
        shared = common_prefix(donor.kv_tokens, prompt)
        if shared > best_len:
            best, best_len = donor, shared
    if best is None:
        return None
    return CopyPrefix(session, best, tuple(prompt[:best_len]))


def plan_generation_room(session: SequenceState, *, n_ctx: int, memory: MemoryConfig,
                         can_shift: bool) -> Shift | None:
    """Room for one more token: None if there is room already, a Shift if shifting frees it.
    Raises LookupError when the context is full and shifting is off or impossible."""
    n_tokens = len(session.kv_tokens)
    if n_tokens + 1 <= n_ctx:
        return None
    if not (memory.context_shifting and can_shift):
        raise LookupError("context full")
    n_keep = keep_count(n_ctx, memory)
    return Shift(session, n_keep, discard_count(n_tokens, n_keep, memory))
