"""What the Erlang port's forwarder (adapters/erlang/relay.py) relies on: Stream.on_change
calls back at once and after every change a reader can see, and never for a change that
is not there (pieces put without waking wait for the wake)."""
from __future__ import annotations

from wasi_nn_backend.api import Completion, FinishReason, Stream
from wasi_nn_backend.errors import ErrorCode, NotFound


def completion(text: str) -> Completion:
    return Completion(text=text, finish_reason=FinishReason.LENGTH, code=ErrorCode.SUCCESS,
                      prompt_tokens=1, reused_tokens=0, prefilled_tokens=1,
                      generated_tokens=(), final_tokens=())


def test_on_change_hears_every_change_a_reader_can_see():
    stream, calls = Stream(), []
    stream.on_change(lambda: calls.append(1))
    assert len(calls) == 1                 # at once: something may be readable already
    stream.put("a", wake=False)
    assert len(calls) == 1                 # not yet: the engine wakes before llama_decode
    stream.wake()
    stream.put("b")
    assert len(calls) == 3
    stream.finish(completion("ab"))
    stream.fail(NotFound("late"))          # ignored: already done, so no call
    assert len(calls) == 4
    assert [stream.try_get(), stream.try_get()] == ["a", "b"]


def test_on_change_hears_a_failure():
    stream, calls = Stream(), []
    stream.on_change(lambda: calls.append(1))
    stream.fail(NotFound("closed"))
    assert calls == [1, 1]
