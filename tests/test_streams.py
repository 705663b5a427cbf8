"""engine.streams.Stream: pieces put without waking stay readable, and wake() delivers them to a
reader blocked in get() (the engine wakes readers just before llama_decode)."""
from __future__ import annotations

import threading

from wasi_nn_backend.engine.streams import Stream


def test_unwoken_pieces_are_readable_and_empty_pieces_are_not_added():
    stream = Stream()
    assert stream.put("", wake=False) is False
    assert stream.try_get() is None
    assert stream.put("a", wake=False) is True
    assert stream.try_get() == "a" and stream.try_get() is None


def test_wake_delivers_to_a_blocked_reader():
    stream = Stream()
    got: list[str] = []
    waiting = threading.Event()

    def reader() -> None:
        waiting.set()
        got.append(stream.get(timeout=30))

    thread = threading.Thread(target=reader)
    thread.start()
    assert waiting.wait(10)
    stream.put("piece", wake=False)
    stream.wake()
    thread.join(30)
    assert not thread.is_alive() and got == ["piece"]
