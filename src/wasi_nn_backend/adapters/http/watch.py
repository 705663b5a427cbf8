"""Reading a Stream from the event loop without a thread per client.

Stream.on_change fires on the engine's thread at every piece and at the end; it only marks
the watch on its event loop's Waker (a ReadySet: a lock and a notify, no system call), and the
Waker's thread hands every marked watch to the loop at once (one call_soon_threadsafe, which
sets their asyncio.Events); the coroutine reading a stream drains it with the non-blocking
try_get. At 64 streaming clients that is 64 events and one thread, not 64 threads.

Why not call_soon_threadsafe from the engine's thread: it writes to the loop's self-pipe, a
system call that lets go of the GIL just before llama_decode; the event loop's thread takes
it, and the engine waits until that thread lets go again before it can start the decode
(measured with one client: 4% of the engine thread's samples, in Stream.wake). The Waker's
thread wakes while llama_decode runs, when the GIL is free.

A request stops within one engine step when its client goes away: a streaming response is
cancelled by Starlette on disconnect (the generator's ``finally`` cancels the stream), and a
plain one races the end of its stream against the client's http.disconnect.
"""
from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from ...api import Completion, EndOfStream, Piece, ReadySet, Stream


class Waker:
    """One per event loop: a thread that wakes the loop's watches the engine marked. It holds
    its loop weakly (the registry is keyed by it) and ends once the loop is closed or gone."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Waker] = \
        weakref.WeakKeyDictionary()
    _made = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ready: ReadySet[Watch] = ReadySet()
        threading.Thread(target=self._run, args=(weakref.ref(loop), self.ready),
                         name="http-waker", daemon=True).start()

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Waker:
        with cls._made:
            waker = cls._by_loop.get(loop)
            if waker is None:
                waker = cls._by_loop[loop] = cls(loop)
            return waker

    @staticmethod
    def _run(loop_ref: weakref.ref, ready: ReadySet[Watch]) -> None:
        while True:
            watches = ready.take(timeout=1.0)
            loop = loop_ref()
            if watches is None or loop is None or loop.is_closed():
                return
            if watches:
                try:
                    loop.call_soon_threadsafe(_set_all, watches)
                except RuntimeError:   # the loop closed meanwhile (server shutdown)
                    return
            del loop


def _set_all(watches: list[Watch]) -> None:
    for watch in watches:
        watch._event.set()


class Watch:
    """One stream, read on the event loop; ``on_end`` runs once on the engine's thread when
    the stream ends (the pool frees the session: quick, never blocking)."""

    def __init__(self, stream: Stream, on_end: Callable[[], None]) -> None:
        self.stream = stream
        self.end: EndOfStream | None = None
        self._event = asyncio.Event()
        self._waker = Waker.of(asyncio.get_running_loop())
        self._on_end: Callable[[], None] | None = on_end
        stream.on_change(self._changed)

    def _changed(self) -> None:
        if self.stream.done and self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()
        self._waker.ready.mark(self)

    async def pieces(self) -> AsyncIterator[Piece]:
        """The pieces as they come (with the tokens each completes, when the request asked
        for their probabilities); ``self.end`` says how the stream ended."""
        while True:
            self._event.clear()
            while True:
                try:
                    piece = self.stream.try_get_piece()
                except EndOfStream as end:
                    self.end = end
                    return
                if piece is None:
                    break
                yield piece
            await self._event.wait()

    async def result(self, request: Request) -> Completion | None:
        """The completion (or its error raised); None when the client went away first (the
        stream is cancelled then)."""
        async def drain() -> None:
            async for _ in self.pieces():
                pass
        reading = asyncio.ensure_future(drain())
        leaving = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({reading, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            if not reading.done():
                reading.cancel()
                self.stream.cancel()
        if self.end is None:
            return None
        return self.end.result()

    def cancel(self) -> None:
        """Stop the request if it still runs (the client left)."""
        self.stream.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
