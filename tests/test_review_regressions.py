"""Regressions found in review: closing must cancel a running chat at once; a queued request
keeps its session from idle cleanup; closed contexts leave no I/O state behind; a new prompt
restarts streaming."""
from __future__ import annotations

import threading

import pytest

from wasi_nn_backend import Backend, FakeClock, FinishReason
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.errors import BackendRuntimeError, ErrorCode

ENDLESS = {"temperature": 0, "ignore_eos": True, "max_tokens": -1}


def test_close_cancels_a_running_chat_without_waiting_for_it(tiny_model_path):
    with Backend({"backend": {"default_task_timeout_ms": 0}}) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 2}})
        session = graph.session()
        submitted = []
        started = threading.Event()
        submit = session._submit

        def watched(*args, **kw):  # hand the chat's stream to the test
            submitted.append(submit(*args, **kw))
            started.set()
            return submitted[-1]
        session._submit = watched
        result = {}
        chat = threading.Thread(target=lambda: result.setdefault(
            "reply", session.chat("Hello", **ENDLESS)))
        chat.start()
        assert started.wait(30)
        submitted[0].get(timeout=30)   # it is generating (and would, shifting, forever)
        session.close()
        chat.join(30)
        assert not chat.is_alive()
        assert result["reply"].finish_reason == FinishReason.CANCELLED


def test_a_queued_request_keeps_its_session_from_cleanup(tiny_model_path):
    config = {"backend": {"max_sessions": 2, "max_concurrent": 1,
                          "default_task_timeout_ms": 0}}
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 2}})
        busy = graph.session().complete_stream("Hello", **ENDLESS)
        busy.get(timeout=30)
        queued_session = graph.session()
        queued = queued_session.complete_stream("Hi", temperature=0, max_tokens=2)
        with pytest.raises(BackendRuntimeError, match="max_sessions"):
            graph.session()       # nobody is idle: the queued one is not evicted
        assert not queued_session.closed
        busy.cancel()
        assert queued.result(timeout=30).code == ErrorCode.SUCCESS


def test_closed_contexts_leave_no_io_state(tiny_model_path):
    clock = FakeClock()
    code, ctx = nn.init_backend_with_config('{"backend": {"idle_timeout_ms": 1000}}',
                                            clock=clock)
    _, graph = nn.load_by_name(ctx, tiny_model_path)
    _, old = nn.init_execution_context(ctx, graph)
    assert nn.set_input(ctx, old, 0, b"Hello") == ErrorCode.SUCCESS
    clock.advance(2)
    nn.backend_of(ctx).cleanup_idle()
    _, new = nn.init_execution_context(ctx, graph)
    assert nn.set_input(ctx, new, 0, b"Hello") == ErrorCode.SUCCESS
    assert nn.backend_of(ctx).context_handles == [new]
    assert nn.compute(ctx, old) == ErrorCode.NOT_FOUND
    nn.deinit_backend(ctx)


def test_a_new_prompt_restarts_streaming(tiny_model_path):
    _, ctx = nn.init_backend()
    _, graph = nn.load_by_name(ctx, tiny_model_path)
    _, ex = nn.init_execution_context(ctx, graph)
    nn.set_input(ctx, ex, 1, b'{"temperature": 0, "max_tokens": 2, "ignore_eos": true}')
    nn.set_input(ctx, ex, 0, b"Hello")
    while nn.compute_single(ctx, ex) == ErrorCode.SUCCESS:
        pass
    assert nn.compute_single(ctx, ex) == ErrorCode.END_OF_SEQUENCE
    nn.set_input(ctx, ex, 0, b"Another prompt")
    assert nn.compute_single(ctx, ex) == ErrorCode.SUCCESS
    nn.deinit_backend(ctx)


def test_a_turn_cut_short_leaves_the_history_and_reports_an_error(tiny_model_path):
    config = '{"model": {"n_ctx": 32, "n_seq_max": 1}, "memory": {"context_shifting": false}}'
    _, ctx = nn.init_backend()
    _, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, config)
    _, ex = nn.init_execution_context(ctx, graph)
    out = bytearray(4096)
    code, size = nn.run_inference(ctx, ex, 0, "hi", out, '{"max_tokens": 1000, "ignore_eos": true}')
    assert code == ErrorCode.CONTEXT_FULL and size > 1      # the partial reply is written
    assert nn.backend_of(ctx).session(ex).history == []    # but it is no turn to build on
    code, _ = nn.run_inference(ctx, ex, 0, "hi", out, '{"max_tokens": 2, "temperature": 0}')
    assert code == ErrorCode.SUCCESS                        # so the session goes on
    assert len(nn.backend_of(ctx).session(ex).history) == 2
    nn.deinit_backend(ctx)


def test_closing_during_run_inference_is_not_success(tiny_model_path):
    _, ctx = nn.init_backend_with_config('{"backend": {"default_task_timeout_ms": 0}}')
    _, graph = nn.load_by_name(ctx, tiny_model_path)
    _, ex = nn.init_execution_context(ctx, graph)
    session = nn.backend_of(ctx).session(ex)
    started = threading.Event()
    submit = session._submit

    def watched(*args, **kw):
        stream = submit(*args, **kw)
        started.set()
        return stream
    session._submit = watched
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", nn.run_inference(
        ctx, ex, 0, "hi", bytearray(1 << 16), '{"max_tokens": -1, "ignore_eos": true}')))
    worker.start()
    assert started.wait(30)
    assert nn.close_execution_context(ctx, ex) == ErrorCode.SUCCESS
    worker.join(30)
    assert result["r"][0] == ErrorCode.NOT_FOUND
    nn.deinit_backend(ctx)
