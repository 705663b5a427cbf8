"""Per-request output: text pieces as they come, then a Completion or an error.

Blocking reads are built on non-blocking ones (try_get / get(timeout)); closing or failing a
stream wakes every waiter. Once every piece is read, get() and try_get() raise EndOfStream,
which says how the stream ended: finished (its Completion) or failed (its error); try_get()
returns None only while nothing is there yet. Iterating gives the pieces, then stops, or raises
the error of a failed stream. A reader of many streams at once (the Erlang
port's forwarder, a server's event loop) hears of each change through on_change instead of a
thread per stream, and waits on a ReadySet: one wake-up a step for all its streams instead of
one a stream (at 64 streams a thread each cost ~15 us of CPU a token; bench/scale.py).
A request that asked for n_probs also says which tokens each piece covers (try_get_piece):
a piece's text may hold tokens held back earlier (a possible stop string, a split UTF-8
character), so a server can stream each token's probabilities with the text they made.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, TypeVar

from ..core.request import Completion
from ..errors import WasiNnError


T = TypeVar("T")

TokenProbs = tuple[int, tuple[tuple[int, float], ...]]   # (token, its top-n (token, p))


class Piece(NamedTuple):
    """A piece of text and the generated tokens it completes, each with its top-n
    probabilities (only for requests that asked for n_probs; else no tokens)."""

    text: str
    tokens: tuple[TokenProbs, ...] = ()


class ReadySet(Generic[T]):
    """The items (streams, or what reads them) that have something new, for one thread that
    reads many streams: on_change callbacks mark() them, on the thread that changed the
    stream (often the engine's: mark is quick and never waits long); the reader take()s
    every marked item at once and reads each with try_get."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._ready: dict[int, T] = {}
        self._closed = False

    def mark(self, item: T) -> None:
        with self._cond:
            self._ready[id(item)] = item
            self._cond.notify()

    def close(self) -> None:
        """take() returns None from now on (once the marked items are taken)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> list[T] | None:
        """Every item marked since the last take, each once, in the order first marked;
        waits up to ``timeout`` seconds for one ([] past it); None once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._closed, timeout):
                return []
            if not self._ready:
                return None
            items, self._ready = list(self._ready.values()), {}
            return items


class EndOfStream(Exception):
    """Every piece of the stream was read, and it has ended: ``completion`` when it finished,
    ``error`` when it failed (exactly one is set)."""

    def __init__(self, completion: Completion | None = None,
                 error: WasiNnError | None = None) -> None:
        self.completion = completion
        self.error = error
        super().__init__("the stream failed: " + str(error) if error is not None
                         else "the stream finished")

    @property
    def failed(self) -> bool:
        return self.error is not None

    def result(self) -> Completion:
        """The completion, or the error raised (as Stream.result())."""
        if self.error is not None:
            raise self.error
        assert self.completion is not None
        return self.completion


class Stream:
    def __init__(self, cancel: Callable[[], None] | None = None) -> None:
        lock = threading.Lock()
        self._cond = threading.Condition(lock)       # readers of pieces wait here
        self._ended = threading.Condition(lock)      # result() waits here: woken by the end only
        self._piece_readers = 0                      # get() calls waiting now (under the lock)
        self._pieces: deque[str | Piece] = deque()   # a Piece only when it has tokens
        self._completion: Completion | None = None
        self._error: WasiNnError | None = None
        self._failed_at: float | None = None
        self._cancel = cancel
        self._on_change: Callable[[], None] | None = None

    # -- engine side -------------------------------------------------------------------------
    def put(self, text: str, *, wake: bool = True,
            tokens: tuple[TokenProbs, ...] = ()) -> bool:
        """Add a piece (none for ''); returns whether one was added. ``tokens``: the
        generated tokens it completes, with their probabilities (try_get_piece). ``wake=False``
        leaves the readers asleep until ``wake()``: the engine wakes them just before
        llama_decode releases the GIL, so that a reader wakes once, not once for its piece
        and again when the GIL comes free."""
        if not text:
            return False
        item: str | Piece = Piece(text, tokens) if tokens else text
        if not wake:  # deque.append is atomic; the wake() that must follow takes the lock
            self._pieces.append(item)
            return True
        with self._cond:
            self._pieces.append(item)
            self._cond.notify_all()
        self._changed()
        return True

    def wake(self) -> None:
        """Wake the readers waiting for a piece (put(wake=False) added it), if any: a caller
        waiting in result() sleeps through the pieces. No lock is taken when nobody waits:
        a reader counts itself in before it looks for a piece, and the piece was appended
        before this reads the count, so either it is counted here or it finds the piece."""
        if self._piece_readers:
            with self._cond:
                self._cond.notify_all()
        self._changed()

    def finish(self, completion: Completion) -> None:
        with self._cond:
            if self.done:
                return
            self._completion = completion
            self._cond.notify_all()
            self._ended.notify_all()
        self._changed()

    def fail(self, error: WasiNnError, at: float | None = None) -> None:
        """End with ``error``; ``at`` is when, on the engine's clock (see ended_at)."""
        with self._cond:
            if self.done:
                return
            self._error, self._failed_at = error, at
            self._cond.notify_all()
            self._ended.notify_all()
        self._changed()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` now and after every change a reader can see (a piece, the end),
        on the thread that made it, often the engine's: it must be quick, never block and never
        read the stream (have another thread read it). Nor make a system call (a socket write,
        asyncio's call_soon_threadsafe): that lets go of the GIL just before llama_decode, and
        the engine waits for it; mark a ReadySet and let its reader make the call (HTTP's
        watch.Waker). One callback per stream."""
        self._on_change = callback
        callback()

    def _changed(self) -> None:
        callback = self._on_change
        if callback is not None:
            callback()

    # -- reader side -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._completion is not None or self._error is not None

    @property
    def ended_at(self) -> float | None:
        """When the request ended, on the engine's clock (finished or failed); None while it
        runs or when a failure gave no time."""
        completion = self._completion
        return completion.finished_at if completion is not None else self._failed_at

    def try_get(self) -> str | None:
        """The next piece, or None if none is there yet; EndOfStream once every piece was
        read and the stream has ended (finished or failed)."""
        with self._cond:
            item = self._next_locked(block=False)
        return item if item is None or type(item) is str else item.text

    def try_get_piece(self) -> Piece | None:
        """As try_get, with the tokens the piece completes (requests with n_probs)."""
        with self._cond:
            item = self._next_locked(block=False)
        return item if item is None or type(item) is Piece else Piece(item)

    def get(self, timeout: float | None = None) -> str:
        """The next piece, waiting up to ``timeout`` seconds (TimeoutError past it);
        EndOfStream once every piece was read and the stream has ended."""
        with self._cond:
            self._piece_readers += 1
            try:
                if not self._cond.wait_for(lambda: self._pieces or self.done, timeout):
                    raise TimeoutError("no output within the time given")
            finally:
                self._piece_readers -= 1
            item = self._next_locked(block=True)
        assert item is not None
        return item if type(item) is str else item.text

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the end; the Completion (its text holds every piece) or the error."""
        with self._ended:
            if not self._ended.wait_for(lambda: self.done, timeout):
                raise TimeoutError("the request did not finish within the time given")
            if self._error is not None:
                raise self._error
            assert self._completion is not None
            return self._completion

    def cancel(self) -> None:
        if self._cancel is not None and not self.done:
            self._cancel()

    def __iter__(self) -> Iterator[str]:
        """The pieces until the end; a failed stream raises its error after its pieces."""
        while True:
            try:
                piece = self.get()
            except EndOfStream as end:
                if end.error is not None:
                    raise end.error from None
                return
            yield piece

    def _next_locked(self, block: bool) -> str | Piece | None:
        if self._pieces:
            return self._pieces.popleft()
        if self.done:
            raise EndOfStream(self._completion, self._error)
        if block:  # pragma: no cover - wait_for guarantees one of the above
            raise RuntimeError("stream woke with nothing to read")
        return None
