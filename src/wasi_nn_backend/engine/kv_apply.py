"""Performing KvActions on the context, with their bookkeeping (engine thread only)."""
from __future__ import annotations

import logging

from ..core.plan import CopyPrefix, Evict, KvAction, Move, Shift, Restore, Offload, Trim
from ..core.request import SequenceState
from ..llm.context import Context
from .counters import EngineCounters
from .offload import OffloadStore

log = logging.getLogger("wasi_nn_backend.engine")


class KvApplier:
    def __init__(self, context: Context, store: OffloadStore, counters: EngineCounters) -> None:
        self.context = context
        self.store = store
        self.counters = counters
        self._puts: list[tuple[SequenceState, bytes]] = []
        self.restarted: set[SequenceState] = set()

    def apply_all(self, actions: list[KvAction]) -> set[SequenceState]:
        """Apply a plan's actions in order. Returns the sessions whose restore or prefix copy
        failed: their sequence is empty and must be prefilled from the start."""
        self.restarted = set()
        for action in actions:
            if action.session in self.restarted:
                continue  # planned on tokens that did not arrive
            self.apply(action)
        # Saved bytes enter the store after this plan's restores took theirs, so one budget
        # drop cannot take away what the same plan restores.
        for session, data in self._puts:
            self.store.put(session, data)
        self._puts.clear()
        return self.restarted

    def apply(self, action: KvAction) -> None:
        session = action.session
        if isinstance(action, Evict):
            self.context.seq_rm(action.seq_id, -1, -1)  # the pool already emptied kv_tokens
            self.counters.evictions += 1
        elif isinstance(action, Offload):
            self._puts.append((session, self.context.state_seq_get(action.seq_id)))
            self.context.seq_rm(action.seq_id, -1, -1)
            self.counters.offloads += 1
        elif isinstance(action, Restore):
            self._restore(action)
        elif isinstance(action, CopyPrefix):
            self._copy_prefix(action)
        elif isinstance(action, Move):
            self._move(action)
        elif isinstance(action, Trim):
            self.context.seq_rm(session.seq_id, action.keep, -1)
            del session.kv_tokens[action.keep:]
        elif isinstance(action, Shift):
            keep, discard, n_tokens = action.keep, action.discard, len(session.kv_tokens)
            self.context.seq_rm(session.seq_id, keep, keep + discard)
            self.context.seq_add(session.seq_id, keep + discard, n_tokens, -discard)
            del session.kv_tokens[keep:keep + discard]
            session.shifts += 1
            self.counters.shifts += 1

    def _restore(self, action: Restore) -> None:
        session = action.session
        data = self._take_saved(session)
        if data is None:
            why = "its saved state was dropped"
        elif not self.context.state_seq_set(action.seq_id, data):
            why = "llama.cpp refused the saved state"
        elif self.context.seq_pos_max(action.seq_id) != len(session.kv_tokens) - 1:
            why = "the restored sequence has other positions than planned"
        else:
            self.counters.restores += 1
            return
        self.counters.restore_failures += 1
        log.warning("session %d: KV state could not be restored (%s); prefilling it again",
                    session.session_id, why)
        self._restart(session)

    def _take_saved(self, session: SequenceState) -> bytes | None:
        """The session's saved bytes: saved earlier in this plan (a slot taken from it, then
        one given back to it), else from the store."""
        for index, (saved, data) in enumerate(self._puts):
            if saved is session:
                del self._puts[index]
                return data
        return self.store.take(session)

    def _drop_saved(self, session: SequenceState) -> None:
        self._puts = [(saved, data) for saved, data in self._puts if saved is not session]
        self.store.discard(session)

    def _move(self, action: Move) -> None:
        """The whole sequence to its new slot, through its state bytes (as an offload and
        restore, bit-exact and done now; llama.cpp's cross-stream seq_cp would copy only at
        the next decode, and a state read or write before that would see the old buffers)."""
        session = action.session
        data = self.context.state_seq_get(action.src) if session.kv_tokens else None
        self.context.seq_rm(action.src, -1, -1)
        self.context.seq_rm(action.dst, -1, -1)
        self.counters.moves += 1
        if data is None:
            return
        if self.context.state_seq_set(action.dst, data) \
                and self.context.seq_pos_max(action.dst) == len(session.kv_tokens) - 1:
            return
        log.warning("session %d: its KV sequence could not be moved; prefilling it again",
                    session.session_id)
        self._restart(session)

    def _copy_prefix(self, action: CopyPrefix) -> None:
        session, source, count = action.session, action.source, len(action.tokens)
        target = session.seq_id
        self._drop_saved(session)  # an offloaded state it had is replaced, not restored
        self.context.seq_rm(target, -1, -1)
        copied = source.seq_id is not None and tuple(source.kv_tokens[:count]) == action.tokens
        if copied:
            if self.context.kv_unified:
                self.context.seq_cp(source.seq_id, target, 0, count)  # shares the cells
            else:  # separate streams copy whole: copy all, keep the prefix
                self.context.seq_cp(source.seq_id, target, -1, -1)
                self.context.seq_rm(target, count, -1)
            copied = self.context.seq_pos_max(target) == count - 1
        if copied:
            self.counters.prefix_copies += 1
            self.counters.copied_tokens += count
            return
        self._restart(session)

    def _restart(self, session: SequenceState) -> None:
        """The sequence did not get the planned tokens: empty it; it is prefilled from 0."""
        self.context.seq_rm(session.seq_id, -1, -1)
        session.kv_tokens = []
        self.restarted.add(session)
