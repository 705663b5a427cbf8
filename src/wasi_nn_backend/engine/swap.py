"""Host-RAM store of per-sequence KV state bytes, least recently used first out, under a byte
budget (memory.max_memory_mb). A session whose bytes are dropped loses nothing a user sees: its
tokens are prefilled again on its next use."""
from __future__ import annotations

from collections import OrderedDict

from ..core.session import SessionState


class SwapStore:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[SessionState, bytes]] = OrderedDict()
        self.bytes_used = 0
        self.swapped_out = 0
        self.swapped_in = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, session: SessionState, data: bytes) -> None:
        """Keep ``data`` for ``session``; drop the oldest entries past the budget (the sessions
        dropped forget they were swapped)."""
        self.discard(session)
        self._entries[session.session_id] = (session, data)
        self.bytes_used += len(data)
        self.swapped_out += 1
        while self.bytes_used > self.max_bytes and self._entries:
            _, (old, old_data) = self._entries.popitem(last=False)
            self.bytes_used -= len(old_data)
            old.swapped_tokens = None
            self.dropped += 1

    def take(self, session: SessionState) -> bytes | None:
        entry = self._entries.pop(session.session_id, None)
        if entry is None:
            return None
        self.bytes_used -= len(entry[1])
        self.swapped_in += 1
        return entry[1]

    def discard(self, session: SessionState) -> None:
        entry = self._entries.pop(session.session_id, None)
        if entry is not None:
            self.bytes_used -= len(entry[1])
