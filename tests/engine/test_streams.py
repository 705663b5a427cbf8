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


def _completion(text: str):
    from wasi_nn_backend.core.request import Completion, FinishReason
    from wasi_nn_backend.errors import ErrorCode
    return Completion(text=text, finish_reason=FinishReason.STOP, code=ErrorCode.SUCCESS,
                      prompt_tokens=1, reused_tokens=0, prefilled_tokens=1,
                      generated_tokens=(), final_tokens=())


def test_a_finished_stream_ends_with_its_completion_after_its_pieces():
    import pytest

    from wasi_nn_backend import EndOfStream
    stream = Stream()
    stream.put("a")
    done = _completion("a")
    stream.finish(done)
    assert stream.try_get() == "a"
    for read in (stream.try_get, stream.get):
        with pytest.raises(EndOfStream) as end:
            read()
        assert end.value.completion is done and end.value.error is None
        assert end.value.result() is done
    assert list(stream) == []


def test_a_failed_stream_ends_with_its_error_and_iteration_raises_it():
    import pytest

    from wasi_nn_backend import EndOfStream
    from wasi_nn_backend.errors import NotFound
    stream = Stream()
    stream.put("a")
    stream.fail(NotFound("closed"))
    assert stream.get(timeout=1) == "a"
    with pytest.raises(EndOfStream) as end:
        stream.try_get()
    assert isinstance(end.value.error, NotFound) and end.value.completion is None
    with pytest.raises(NotFound):
        end.value.result()
    again = Stream()
    again.put("b")
    again.fail(NotFound("closed"))
    got = []
    with pytest.raises(NotFound):
        for piece in again:
            got.append(piece)
    assert got == ["b"]


def test_wake_takes_no_lock_when_no_reader_waits():
    """Per token the engine wakes every stream it put a piece on; a stream nobody is reading
    piece by piece (a caller in result(), or no caller yet) costs no lock and no wake-up."""
    stream = Stream()
    stream.put("piece", wake=False)
    done = threading.Event()
    with stream._cond:   # held: a wake() that took the lock would block here
        thread = threading.Thread(target=lambda: (stream.wake(), done.set()))
        thread.start()
        assert done.wait(10)
    thread.join(10)
    assert stream.try_get() == "piece"


def test_result_waits_for_the_end_through_pieces_and_wakes():
    stream = Stream()
    results = []
    waiting = threading.Event()

    def caller() -> None:
        waiting.set()
        results.append(stream.result(timeout=30))

    thread = threading.Thread(target=caller)
    thread.start()
    assert waiting.wait(10)
    for piece in ("a", "b", "c"):
        stream.put(piece, wake=False)
        stream.wake()
        stream.put(piece)            # the waking put, too
    assert thread.is_alive()
    stream.finish(_completion("abcabc"))
    thread.join(30)
    assert not thread.is_alive() and results[0].text == "abcabc"


def test_a_ready_set_gives_each_changed_stream_once_to_one_reader():
    """Many streams read from one thread: on_change marks a stream (on the engine's thread);
    take() gives every marked one once, in the order first marked, and waits for the next."""
    from wasi_nn_backend import EndOfStream, ReadySet
    ready: ReadySet[Stream] = ReadySet()
    streams = [Stream() for _ in range(3)]
    for stream in streams:
        stream.on_change(lambda s=stream: ready.mark(s))   # marks each once, now
    assert ready.take(timeout=0) == streams
    assert ready.take(timeout=0) == []
    streams[2].put("c", wake=False)
    streams[0].put("a", wake=False)
    for stream in (streams[2], streams[0]):
        stream.wake()
    streams[2].wake()
    assert ready.take(timeout=0) == [streams[2], streams[0]]
    assert [s.try_get() for s in streams] == ["a", None, "c"]
    taken: list = []
    waiting = threading.Event()

    def reader() -> None:
        waiting.set()
        while (items := ready.take(timeout=30)) is not None:
            taken.extend(items)

    thread = threading.Thread(target=reader)
    thread.start()
    assert waiting.wait(10)
    streams[1].finish(_completion(""))
    ready.close()
    thread.join(30)
    assert not thread.is_alive() and taken == [streams[1]]
    try:
        streams[1].try_get()
        raise AssertionError("a finished stream with nothing left ends")
    except EndOfStream as end:
        assert end.completion is not None
