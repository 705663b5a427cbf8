"""Embeddings through the function API (set_input -> compute -> get_output), as WasmEdge's GGML
plugin gives them: index 0 is {"n_embedding": N, "embedding": [...]}, index 1 the usage JSON;
bad input and generation calls get codes, never a crash."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.errors import ErrorCode as E
from wasi_nn_backend.api.exec_context import embedding_json
from nn_results import ok  # tests/nn_results.py

CONFIG = '{"embedding": true, "ctx-size": 128, "threads": 1}'
# WasmEdge's bytes: fmt "{:.10}" values joined by "," (no spaces), one space after each colon.
WASMEDGE_SHAPE = re.compile(rb'\{"n_embedding": 64, "embedding": \[[-0-9.e+]+(,[-0-9.e+]+){63}\]\}')




@pytest.fixture
def ctx():
    handle = ok(nn.init_backend_with_config('{"logging": {"level": "error"}}'))
    yield handle
    nn.deinit_backend(handle)


@pytest.fixture
def exec_ctx(ctx, tiny_model_path):
    graph = ok(nn.load_by_name_with_config(ctx, tiny_model_path, None, CONFIG))
    return ok(nn.init_execution_context(ctx, graph))


def compute(ctx, exec_ctx, text: bytes) -> int:
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([len(text)], nn.TensorType.U8, text)) \
        == E.SUCCESS
    return nn.compute(ctx, exec_ctx)


def output(ctx, exec_ctx, index: int) -> bytes:
    out = bytearray(1 << 16)
    size = ok(nn.get_output(ctx, exec_ctx, index, out))
    return bytes(out[:size])


def test_get_output_is_wasmedges_embedding_json(ctx, exec_ctx):
    assert compute(ctx, exec_ctx, b"hello world") == E.SUCCESS
    data = output(ctx, exec_ctx, 0)
    assert WASMEDGE_SHAPE.fullmatch(data), data[:200]
    document = json.loads(data)
    assert document["n_embedding"] == 64 == len(document["embedding"])
    assert np.linalg.norm(document["embedding"]) == pytest.approx(1.0, abs=1e-6)
    session = nn.backend_of(ctx).session(exec_ctx)
    np.testing.assert_allclose(document["embedding"], session.embed("hello world"), rtol=1e-9)


def test_the_usage_counts_the_input_and_no_output(ctx, exec_ctx):
    compute(ctx, exec_ctx, b"hello world")
    usage = json.loads(output(ctx, exec_ctx, 1))
    assert usage["input_tokens"] == 3 and usage["output_tokens"] == 0
    assert {"llama_build_number", "llama_commit"} <= set(usage)


def test_compute_is_deterministic_across_contexts(ctx, exec_ctx, tiny_model_path):
    compute(ctx, exec_ctx, b"the cat sat")
    first = output(ctx, exec_ctx, 0)
    graph = ok(nn.load_by_name_with_config(ctx, tiny_model_path, None, CONFIG))
    other = ok(nn.init_execution_context(ctx, graph))
    compute(ctx, other, b"the cat sat")
    assert output(ctx, other, 0) == first
    compute(ctx, exec_ctx, b"something else")
    assert output(ctx, exec_ctx, 0) != first


def test_a_small_buffer_is_too_large_with_the_size_needed(ctx, exec_ctx):
    compute(ctx, exec_ctx, b"hello")
    needed = len(output(ctx, exec_ctx, 0))
    assert nn.get_output(ctx, exec_ctx, 0, bytearray(16)) == (E.TOO_LARGE, needed)


def test_bad_input_gets_codes(ctx, exec_ctx):
    assert compute(ctx, exec_ctx, b"") == E.INVALID_ARGUMENT
    assert compute(ctx, exec_ctx, b"word " * 200) == E.PROMPT_TOO_LONG
    assert compute(ctx, exec_ctx, b"fine") == E.SUCCESS


def test_generation_calls_are_unsupported(ctx, exec_ctx):
    compute(ctx, exec_ctx, b"hello")
    assert nn.compute_single(ctx, exec_ctx) == E.UNSUPPORTED_OPERATION
    out = bytearray(256)
    assert nn.run_inference(ctx, exec_ctx, 0, "hi", out)[0] == E.UNSUPPORTED_OPERATION


def test_pooling_none_json_has_a_vector_per_token():
    rows = [[1.0, -0.5], [0.25, 3e-05]]
    assert embedding_json(rows) == (b'{"n_embedding": 2, "n_tokens": 2, '
                                    b'"embedding": [[1,-0.5],[0.25,3e-05]]}')
    assert embedding_json([0.1234567890123, 1.0]) == (
        b'{"n_embedding": 2, "embedding": [0.123456789,1]}')
