"""run_inference's buffer and usage, and the codes of malformed calls: a reply that does not
fit leaves no trace, a bad ``out`` is refused before anything is generated, usage describes the
last request in both modes, and a caller's mistake is invalid_argument / invalid_encoding with
one line logged, never unknown with a traceback. A turn cut short leaves no history and reports
its error; closing the context during run_inference is not success."""
from __future__ import annotations

import json
import logging
import threading

import pytest

from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.errors import ErrorCode as E
from nn_results import ctx, ok  # noqa: F401  (ctx: a fixture; tests/nn_results.py)

GREEDY = '{"temperature": 0, "max_tokens": 12, "ignore_eos": true}'
CONFIG = '{"model": {"n_ctx": 256, "n_seq_max": 4}}'


@pytest.fixture
def graph(ctx, tiny_model_path):
    return ok(nn.load_by_name_with_config(ctx, tiny_model_path, None, CONFIG))


def history(ctx, exec_ctx):
    return nn.backend_of(ctx).session(exec_ctx).history


def test_a_reply_too_large_for_the_buffer_leaves_no_trace(ctx, graph):
    ex = ok(nn.init_execution_context(ctx, graph))
    code, needed = nn.run_inference(ctx, ex, 0, "Hi", bytearray(2), GREEDY)
    assert code == E.TOO_LARGE and needed > 2
    assert history(ctx, ex) == []
    out = bytearray(needed)
    assert nn.run_inference(ctx, ex, 0, "Hi", out, GREEDY) == (E.SUCCESS, needed)
    fresh = ok(nn.init_execution_context(ctx, graph))
    other = bytearray(needed)
    assert nn.run_inference(ctx, fresh, 0, "Hi", other, GREEDY) == (E.SUCCESS, needed)
    assert out == other                          # as if the first call never happened
    assert [m["role"] for m in history(ctx, ex)] == ["user", "assistant"]


@pytest.mark.parametrize("out", [{"a": 1}, 5, "text", b"read-only", None, [0] * 64])
def test_a_bad_out_is_refused_before_generating(ctx, graph, out):
    ex = ok(nn.init_execution_context(ctx, graph))
    before = nn.backend_of(ctx).stats().decode_tokens
    assert nn.run_inference(ctx, ex, 0, "Hi", out, GREEDY) == (E.INVALID_ARGUMENT, None)
    assert history(ctx, ex) == []
    assert nn.backend_of(ctx).stats().decode_tokens == before


def test_usage_describes_run_inference_too(ctx, graph):
    ex = ok(nn.init_execution_context(ctx, graph))
    out = bytearray(1024)
    size = ok(nn.run_inference(ctx, ex, 0, "Hi", out, GREEDY))
    usage = bytearray(4096)
    usage = json.loads(usage[:ok(nn.get_output(ctx, ex, 1, usage))])
    assert usage["output_tokens"] == 12 and usage["input_tokens"] > 0
    assert usage["finish_reason"] == "length"
    text = bytearray(1024)
    assert text[:ok(nn.get_output(ctx, ex, 0, text))] == out[:size - 1]  # without the NUL


def tensor(data, dims=None, kind=nn.TensorType.U8):
    return nn.Tensor(dims, kind, data)


MALFORMED = [
    ("get_output dict out", lambda c, g, x: nn.get_output(c, x, 0, {}), E.INVALID_ARGUMENT),
    ("get_output str index", lambda c, g, x: nn.get_output(c, x, "0", bytearray(8)),
     E.INVALID_ARGUMENT),
    ("get_output float index", lambda c, g, x: nn.get_output(c, x, 0.0, bytearray(8)),
     E.INVALID_ARGUMENT),
    ("get_output_single int out", lambda c, g, x: nn.get_output_single(c, x, 0, 7),
     E.INVALID_ARGUMENT),
    ("str name length", lambda c, g, x: nn.load_by_name_with_config(c, "m.gguf", "5", None),
     E.INVALID_ARGUMENT),
    ("object config length", lambda c, g, x: nn.init_backend_with_config("{}", object()),
     E.INVALID_ARGUMENT),
    ("surrogate prompt", lambda c, g, x: nn.set_input(c, x, 0, "\udc80"), E.INVALID_ENCODING),
    ("surrogate tensor data", lambda c, g, x: nn.set_input(c, x, 0, tensor("a\udc80")),
     E.INVALID_ENCODING),
    ("surrogate message", lambda c, g, x: nn.run_inference(c, x, 0, "\udc80", bytearray(64)),
     E.INVALID_ENCODING),
    ("surrogate session id", lambda c, g, x: nn.init_execution_context_with_session_id(
        c, "\udc80", g), E.INVALID_ENCODING),
    ("high surrogate model name", lambda c, g, x: nn.load_by_name(c, "a\ud800b"),
     E.INVALID_ENCODING),
    ("int builders", lambda c, g, x: nn.load(c, 5, 6, 0), E.INVALID_ARGUMENT),
    ("int in builders", lambda c, g, x: nn.load(c, [5], 6, 0), E.INVALID_ARGUMENT),
    ("str in builders", lambda c, g, x: nn.load(c, ["GGUF"], 6, 0), E.INVALID_ARGUMENT),
    ("int builder config", lambda c, g, x: nn.load(c, [b"GGUF", 3], 6, 0), E.INVALID_ARGUMENT),
    ("int dimensions", lambda c, g, x: nn.set_input(c, x, 0, tensor(b"Hi", 5)),
     E.INVALID_ARGUMENT),
    ("float dimension", lambda c, g, x: nn.set_input(c, x, 0, tensor(b"Hi", [1.5])),
     E.INVALID_ARGUMENT),
    ("int tensor data", lambda c, g, x: nn.set_input(c, x, 0, tensor(5)), E.INVALID_ARGUMENT),
    ("list tensor data", lambda c, g, x: nn.set_input(c, x, 0, tensor([72, 105])),
     E.INVALID_ARGUMENT),
    ("str set_input index", lambda c, g, x: nn.set_input(c, x, "1", b"{}"), E.INVALID_ARGUMENT),
    ("str run_inference index", lambda c, g, x: nn.run_inference(c, x, "0", "Hi",
                                                                 bytearray(64)),
     E.INVALID_ARGUMENT),
    ("int runtime config", lambda c, g, x: nn.run_inference(c, x, 0, "Hi", bytearray(64), 5),
     E.INVALID_ARGUMENT),
    ("float runtime config length", lambda c, g, x: nn.run_inference(
        c, x, 0, "Hi", bytearray(64), "{}", 1.5), E.INVALID_ARGUMENT),
    ("list encoding", lambda c, g, x: nn.load(c, [b"GGUF"], [6], 0), E.INVALID_ARGUMENT),
]


@pytest.mark.parametrize("call, expected", [(m[1], m[2]) for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_calls_get_their_code_and_one_line(ctx, graph, call, expected, caplog):
    ex = ok(nn.init_execution_context(ctx, graph))
    with caplog.at_level(logging.INFO, logger="wasi_nn_backend"):
        result = call(ctx, graph, ex)
    code = result[0] if isinstance(result, tuple) else result
    assert code == expected
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    out = bytearray(1024)
    assert nn.run_inference(ctx, ex, 0, "Hi", out, GREEDY)[0] == E.SUCCESS


def test_a_turn_cut_short_leaves_the_history_and_reports_an_error(tiny_model_path):
    config = '{"model": {"n_ctx": 32, "n_seq_max": 1}, "memory": {"context_shifting": false}}'
    _, ctx = nn.init_backend()
    _, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, config)
    _, ex = nn.init_execution_context(ctx, graph)
    out = bytearray(4096)
    code, size = nn.run_inference(ctx, ex, 0, "hi", out, '{"max_tokens": 1000, "ignore_eos": true}')
    assert code == E.CONTEXT_FULL and size > 1              # the partial reply is written
    assert nn.backend_of(ctx).session(ex).history == []    # but it is no turn to build on
    code, _ = nn.run_inference(ctx, ex, 0, "hi", out, '{"max_tokens": 2, "temperature": 0}')
    assert code == E.SUCCESS                                # so the session goes on
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
    assert nn.close_execution_context(ctx, ex) == E.SUCCESS
    worker.join(30)
    assert result["r"][0] == E.NOT_FOUND
    nn.deinit_backend(ctx)
