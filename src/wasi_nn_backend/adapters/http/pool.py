"""Session affinity: which resident session of a model a request runs on.

OpenAI clients are stateless: each turn sends the whole conversation again. A request goes to
the idle session of its model whose KV tokens share the longest prefix with its prompt (as
llama-server picks a slot by prompt similarity), so that turn N prefills only what is new
(Session.complete_stream reuses the shared prefix). An affinity key (the ``user`` field or the
X-Session-Affinity header) pins a conversation to one session instead. The pool is bounded:
beyond ``size`` sessions the least recently used idle one is taken over (keyed ones closed);
when every session is busy the request is refused (503 with Retry-After), never queued here:
the engine's own queue does the waiting and answers busy when it is full.

A session runs one request at a time here (release() when its stream has ended).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ...api import Graph, Session, common_prefix
from .errors import ApiError


@dataclass(eq=False)
class Entry:
    session: Session
    key: str | None = None
    busy: bool = False


def _resident_tokens(session: Session) -> list[int]:
    state = session.state
    return list(state.kv_tokens or state.offloaded_tokens or ())


class SessionPool:
    """The sessions this server opened on one graph, least recently used first."""

    def __init__(self, graph: Graph, size: int) -> None:
        self.graph = graph
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, Entry] = OrderedDict()   # id(entry) -> entry
        self._keyed: dict[str, Entry] = {}

    def acquire(self, tokens: list[int], key: str | None = None) -> Entry:
        """A session for a prompt of ``tokens``, marked busy. Opening or closing sessions
        may wait for the engine: call it off the event loop."""
        to_close: list[Session] = []
        try:
            with self._lock:
                self._drop_closed()
                entry = self._keyed_entry(key) if key is not None \
                    else self._best(tokens, full=len(self._entries) >= self.size)
                if entry is None:
                    entry = self._make_room(key, to_close)
                entry.busy = True
                self._entries.move_to_end(id(entry))
                return entry
        finally:
            for session in to_close:
                session.close()

    def _drop_closed(self) -> None:
        """Sessions the backend closed (idle cleanup, LRU at max_sessions) leave the pool."""
        for ident, entry in list(self._entries.items()):
            if entry.session.closed and not entry.busy:
                del self._entries[ident]
                if entry.key is not None:
                    self._keyed.pop(entry.key, None)

    def _keyed_entry(self, key: str) -> Entry | None:
        entry = self._keyed.get(key)
        if entry is not None and entry.busy:
            raise ApiError(429, f"the conversation {key!r} has a request running", "user",
                           "conversation_busy")
        return entry

    def _best(self, tokens: list[int], full: bool) -> Entry | None:
        """The idle unpinned session sharing the longest prefix with the prompt, if that
        prefix is worth taking the session for. While the pool has room: more than half of
        the prompt or of the session's tokens (a shared system prompt alone is no reason to
        overwrite another conversation: a new session gets it by a prefix copy instead).
        Full, some idle session is overwritten anyway: the one sharing the most, if that is
        over a tenth of the prompt (llama-server's slot_prompt_similarity), else the least
        recently used (_make_room); so a stateless conversation whose new turn is a good
        part of its prompt still finds its own session."""
        best, best_len = None, 0
        for entry in self._entries.values():   # least recently used first: ties go to it
            if entry.busy or entry.key is not None:
                continue
            resident = _resident_tokens(entry.session)
            length = common_prefix(tokens, resident)
            if length <= best_len:
                continue
            if 2 * length > min(len(tokens), len(resident)) \
                    or (full and 10 * length > len(tokens)):
                best, best_len = entry, length
        return best

    def _make_room(self, key: str | None, to_close: list[Session]) -> Entry:
        """A new session, or (pool full) the least recently used idle one taken over."""
        if len(self._entries) >= self.size:
            victim = next((e for e in self._entries.values() if not e.busy), None)  # LRU
            if victim is None:
                raise ApiError(503, f"all {self.size} sessions of this model are busy",
                               None, "server_busy")
            if victim.key is None and key is None:
                return victim   # its KV shares nothing with the prompt: reused as is
            del self._entries[id(victim)]
            if victim.key is not None:
                self._keyed.pop(victim.key, None)
            to_close.append(victim.session)
        entry = Entry(self.graph.session(), key)
        self._entries[id(entry)] = entry
        if key is not None:
            self._keyed[key] = entry
        return entry

    def release(self, entry: Entry) -> None:
        """The entry's request has ended (quick: may run on the engine's thread)."""
        with self._lock:
            entry.busy = False

    def sessions(self) -> list[Session]:
        with self._lock:
            return [entry.session for entry in self._entries.values()]
