"""SlotPool: the context's sequence slots (one per resident session), which session gives its slot
up when another needs one, and the moves that keep busy sequences in one run of ids. Returns KV
actions; performs nothing."""
from __future__ import annotations

from collections.abc import Callable

from .plan import Evict, KvAction, Move, Offload, Restore
from .request import SequenceState


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
        """Up to ``max_moves`` KV actions toward one run of consecutive ids for the busy
        sequences (the window of that size that needs the fewest): idle sessions inside it go
        to free slots outside, or, with none free (every slot held: sessions picked by their
        cached prefix land anywhere), give their slot up (offloaded, else evicted); then busy
        sessions outside move into its free slots. A step does at most ``max_moves``; the next
        steps go on until the run is whole. The bookkeeping changes now; the engine performs
        the actions in this order."""
        busy = sorted(s.seq_id for s in self._owner.values() if s.busy)
        k = len(busy)
        if k < 2 or busy[-1] - busy[0] == k - 1:
            return []
        best: tuple[int, int] | None = None
        for start in range(self.n_slots - k + 1):
            inside = range(start, start + k)
            cost = (sum(1 for i in busy if i not in inside)
                    + sum(1 for i in inside if i in self._owner and not self._owner[i].busy))
            if best is None or cost < best[0]:
                best = (cost, start)
        assert best is not None
        inside = range(best[1], best[1] + k)
        actions: list[KvAction] = []
        for src in [i for i in inside if i in self._owner and not self._owner[i].busy]:
            if len(actions) >= max_moves:
                return actions
            free_out = sorted(i for i in self._free if i not in inside)
            if free_out:
                actions.append(self._move(src, free_out[0]))
            else:
                actions.extend(self.give_back(self._owner[src]))
        for src in [i for i in busy if i not in inside]:
            free_in = sorted(i for i in inside if i not in self._owner)
            if len(actions) >= max_moves or not free_in:
                break
            actions.append(self._move(src, free_in[0]))
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
