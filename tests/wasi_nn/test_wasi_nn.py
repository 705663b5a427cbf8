"""The function API beyond the original's tests: the WASI-NN flow, buffers, streaming,
per-context metadata, load from bytes, and codes for every bad handle; closed contexts leave no
I/O state behind, and a new prompt restarts streaming."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import FakeClock
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.errors import ErrorCode as E
from nn_results import ctx, ok  # noqa: F401  (ctx: a fixture; tests/nn_results.py)

GREEDY = b'{"temperature": 0, "max_tokens": 12, "ignore_eos": true}'




@pytest.fixture
def exec_ctx(ctx, tiny_model_path):
    graph = ok(nn.load_by_name_with_config(ctx, str(tiny_model_path), None,
                                           '{"model": {"n_ctx": 256, "n_seq_max": 4}}'))
    return ok(nn.init_execution_context(ctx, graph))


def set_prompt(ctx, exec_ctx, prompt, metadata=GREEDY):
    data = prompt.encode()
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([len(data)], nn.TensorType.U8, data)) \
        == E.SUCCESS
    if metadata is not None:
        assert nn.set_input(ctx, exec_ctx, 1, nn.Tensor([len(metadata)], nn.TensorType.U8,
                                                        metadata)) == E.SUCCESS


def output(ctx, exec_ctx, index, size=4096, single=False):
    out = bytearray(size)
    get = nn.get_output_single if single else nn.get_output
    n = ok(get(ctx, exec_ctx, index, out))
    return bytes(out[:n])


def test_set_input_compute_get_output_returns_text(ctx, exec_ctx):
    set_prompt(ctx, exec_ctx, "Hello there")
    usage = json.loads(output(ctx, exec_ctx, 1))
    assert usage["input_tokens"] > 0  # valid right after set_input
    assert nn.compute(ctx, exec_ctx) == E.SUCCESS
    text = output(ctx, exec_ctx, 0)
    assert len(text) > 0
    usage = json.loads(output(ctx, exec_ctx, 1))
    assert usage["output_tokens"] == 12 and usage["finish_reason"] == "length"
    assert "llama_cpp_python" in usage or "llama_build_number" in usage


def test_buffer_too_small_writes_nothing_and_reports_size(ctx, exec_ctx):
    set_prompt(ctx, exec_ctx, "Hello there")
    nn.compute(ctx, exec_ctx)
    text = output(ctx, exec_ctx, 0)
    small = bytearray(b"#" * (len(text) - 1))
    code, needed = nn.get_output(ctx, exec_ctx, 0, small)
    assert code == E.TOO_LARGE and needed == len(text)
    assert small == bytearray(b"#" * (len(text) - 1))
    assert nn.get_output(ctx, exec_ctx, 0, memoryview(bytearray(len(text))))[0] == E.SUCCESS


def test_run_inference_buffer_too_small(ctx, exec_ctx):
    out = bytearray(2)
    code, needed = nn.run_inference(ctx, exec_ctx, 0, "Hi", out, GREEDY)
    assert code == E.TOO_LARGE and needed > 2 and out == bytearray(2)


def test_compute_without_input_is_invalid_argument(ctx, exec_ctx):
    assert nn.compute(ctx, exec_ctx) == E.INVALID_ARGUMENT
    assert nn.get_output(ctx, exec_ctx, 5, bytearray(4))[0] == E.INVALID_ARGUMENT
    assert nn.set_input(ctx, exec_ctx, 7, b"x") == E.INVALID_ARGUMENT


def test_bad_tensors(ctx, exec_ctx):
    assert nn.set_input(ctx, exec_ctx, 0, None) == E.INVALID_ARGUMENT
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([4], nn.TensorType.F32, b"abcd")) \
        == E.INVALID_ARGUMENT
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([9], nn.TensorType.U8, b"abc")) \
        == E.INVALID_ARGUMENT
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([2], nn.TensorType.U8, b"\xff\xfe")) \
        == E.INVALID_ENCODING
    assert nn.set_input(ctx, exec_ctx, 1, b"{not json") == E.INVALID_ENCODING
    assert nn.set_input(ctx, exec_ctx, 1, b'{"temperature": "hot"}') == E.INVALID_ARGUMENT
    assert nn.set_input(ctx, exec_ctx, 1, b'{"grammar": "root ::= ("}') == E.INVALID_ARGUMENT
    # nothing half-applied: the context still works with its old settings
    set_prompt(ctx, exec_ctx, "Hello")
    assert nn.compute(ctx, exec_ctx) == E.SUCCESS


def test_dimensions_cut_the_data(ctx, exec_ctx):
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([5], nn.TensorType.U8, b"Hello, junk")) \
        == E.SUCCESS
    usage = json.loads(output(ctx, exec_ctx, 1))
    set_prompt(ctx, exec_ctx, "Hello", None)
    assert json.loads(output(ctx, exec_ctx, 1))["input_tokens"] == usage["input_tokens"]


def test_metadata_is_per_context(ctx, tiny_model_path):
    graph = ok(nn.load_by_name(ctx, str(tiny_model_path)))
    a = ok(nn.init_execution_context(ctx, graph))
    b = ok(nn.init_execution_context(ctx, graph))
    set_prompt(ctx, a, "Hello", b'{"temperature": 0, "max_tokens": 3, "ignore_eos": true}')
    set_prompt(ctx, b, "Hello", b'{"temperature": 0, "max_tokens": 7, "ignore_eos": true}')
    nn.compute(ctx, a)
    nn.compute(ctx, b)
    assert json.loads(output(ctx, a, 1))["output_tokens"] == 3
    assert json.loads(output(ctx, b, 1))["output_tokens"] == 7


def test_streaming_single_matches_compute(ctx, exec_ctx):
    set_prompt(ctx, exec_ctx, "Once upon a time")
    nn.compute(ctx, exec_ctx)
    whole = output(ctx, exec_ctx, 0)
    pieces = []
    while True:
        code = nn.compute_single(ctx, exec_ctx)
        if code == E.END_OF_SEQUENCE:
            break
        assert code == E.SUCCESS
        pieces.append(output(ctx, exec_ctx, 0, single=True))
    assert b"".join(pieces) == whole
    assert json.loads(output(ctx, exec_ctx, 1, single=True))["output_tokens"] == 12
    assert nn.fini_single(ctx, exec_ctx) == E.SUCCESS
    assert nn.compute_single(ctx, exec_ctx) == E.SUCCESS  # restarts from the prompt
    assert nn.fini_single(ctx, exec_ctx) == E.SUCCESS


def test_load_from_bytes(ctx, tiny_model_path):
    data = open(tiny_model_path, "rb").read()
    graph = ok(nn.load(ctx, [data, b'{"model": {"n_ctx": 128}}'], 6, 0))
    exec_ctx = ok(nn.init_execution_context(ctx, graph))
    set_prompt(ctx, exec_ctx, "Hi")
    assert nn.compute(ctx, exec_ctx) == E.SUCCESS
    assert nn.load(ctx, [data], 6, 9)[0] == E.INVALID_ARGUMENT
    assert nn.load(ctx, [], 6, 0)[0] == E.INVALID_ARGUMENT
    assert nn.load(ctx, [b"not gguf"], 5, 0)[0] == E.INVALID_ENCODING


def test_closed_handles_are_not_found(ctx, exec_ctx):
    assert nn.close_execution_context(ctx, exec_ctx) == E.SUCCESS
    assert nn.close_execution_context(ctx, exec_ctx) == E.NOT_FOUND
    assert nn.compute(ctx, exec_ctx) == E.NOT_FOUND
    assert nn.run_inference(ctx, exec_ctx, 0, "x", bytearray(8))[0] == E.NOT_FOUND


def test_unload_then_use(ctx, tiny_model_path):
    graph = ok(nn.load_by_name(ctx, str(tiny_model_path)))
    exec_ctx = ok(nn.init_execution_context(ctx, graph))
    assert nn.unload(ctx, graph) == E.SUCCESS
    assert nn.unload(ctx, graph) == E.NOT_FOUND
    assert nn.init_execution_context(ctx, graph)[0] == E.NOT_FOUND
    assert nn.compute(ctx, exec_ctx) == E.NOT_FOUND


def test_wrong_handle_types(ctx):
    assert nn.init_execution_context(ctx, "1")[0] == E.INVALID_ARGUMENT
    assert nn.deinit_backend("ctx") == E.INVALID_ARGUMENT
    assert nn.init_execution_context_with_session_id(ctx, None)[0] == E.INVALID_ARGUMENT


def test_session_ids_return_the_same_session(ctx, tiny_model_path):
    graph = ok(nn.load_by_name(ctx, str(tiny_model_path)))
    a = ok(nn.init_execution_context_with_session_id(ctx, "user-1", graph))
    b = ok(nn.init_execution_context_with_session_id(ctx, "user-1", graph))
    c = ok(nn.init_execution_context_with_session_id(ctx, "user-2", graph))
    assert a == b != c
    assert ok(nn.init_execution_context(ctx, graph)) not in (a, c)


def test_witx_codes():
    from wasi_nn_backend.errors import witx_code
    assert witx_code(E.BUSY) == 4 and witx_code(E.RUNTIME_ERROR) == 5
    assert witx_code(E.NOT_FOUND) == 8 and witx_code(E.TOO_LARGE) == 7
    assert witx_code(E.CONTEXT_FULL) == 101


def test_unknown_tensor_type_is_invalid_argument(ctx, exec_ctx):
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([1], 77, b"x")) == E.INVALID_ARGUMENT


def test_usage_carries_the_build_keys_wasmedge_guests_read(ctx, exec_ctx):
    set_prompt(ctx, exec_ctx, "Hello")
    usage = json.loads(output(ctx, exec_ctx, 1))
    assert {"input_tokens", "output_tokens", "llama_build_number", "llama_commit"} <= set(usage)
    assert nn.backend_of(ctx).session(exec_ctx).handle == exec_ctx


def test_closed_contexts_leave_no_io_state(tiny_model_path):
    clock = FakeClock()
    code, ctx = nn.init_backend_with_config('{"backend": {"idle_timeout_ms": 1000}}',
                                            clock=clock)
    _, graph = nn.load_by_name(ctx, tiny_model_path)
    _, old = nn.init_execution_context(ctx, graph)
    assert nn.set_input(ctx, old, 0, b"Hello") == E.SUCCESS
    clock.advance(2)
    nn.backend_of(ctx).cleanup_idle()
    _, new = nn.init_execution_context(ctx, graph)
    assert nn.set_input(ctx, new, 0, b"Hello") == E.SUCCESS
    assert nn.backend_of(ctx).context_handles == [new]
    assert nn.compute(ctx, old) == E.NOT_FOUND
    nn.deinit_backend(ctx)


def test_a_new_prompt_restarts_streaming(tiny_model_path):
    _, ctx = nn.init_backend()
    _, graph = nn.load_by_name(ctx, tiny_model_path)
    _, ex = nn.init_execution_context(ctx, graph)
    nn.set_input(ctx, ex, 1, b'{"temperature": 0, "max_tokens": 2, "ignore_eos": true}')
    nn.set_input(ctx, ex, 0, b"Hello")
    while nn.compute_single(ctx, ex) == E.SUCCESS:
        pass
    assert nn.compute_single(ctx, ex) == E.END_OF_SEQUENCE
    nn.set_input(ctx, ex, 0, b"Another prompt")
    assert nn.compute_single(ctx, ex) == E.SUCCESS
    nn.deinit_backend(ctx)
