"""Offloaded KV: a host-RAM store of per-sequence KV state bytes (an idle session's sequence,
saved when its slot is taken: core/plan.py's Offload, restored by Restore), least recently used
first out, under a byte budget (memory.max_memory_mb). A session whose bytes are dropped loses
nothing a user sees: its tokens are prefilled again on its next use.

"Offload" is the KV state moving to RAM and back (counted as offloads and restores, held as
offload_bytes in stats); a graph's model replaced by another is replace_model (api/)."""
from __future__ import annotations

from collections import OrderedDict

from ..core.request import SequenceState


class OffloadStore:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[SequenceState, bytes]] = OrderedDict()
        self.bytes_used = 0
        self.offloaded = 0
        self.restored = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, session: SequenceState, data: bytes) -> None:
        """Keep ``data`` for ``session``; drop the oldest entries past the budget (the sessions
        dropped forget they were offloaded)."""
        self.discard(session)
        self._entries[session.session_id] = (session, data)
        self.bytes_used += len(data)
        self.offloaded += 1
        while self.bytes_used > self.max_bytes and self._entries:
            _, (old, old_data) = self._entries.popitem(last=False)
            self.bytes_used -= len(old_data)
            old.offloaded_tokens = None
            self.dropped += 1

    def take(self, session: SequenceState) -> bytes | None:
        entry = self._entries.pop(session.session_id, None)
        if entry is None:
            return None
        self.bytes_used -= len(entry[1])
        self.restored += 1
        return entry[1]

    def discard(self, session: SequenceState) -> None:
        entry = self._entries.pop(session.session_id, None)
        if entry is not None:
            self.bytes_used -= len(entry[1])
