"""The generated test model itself: fast to write, and greedy decoding on it is varied with
clear margins (so batching cannot flip a greedy choice in the other tests)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from wasi_nn_backend.testing.tiny_model import write_tiny_llama
from wasi_nn_backend import errors
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.lib import quantize_model
from wasi_nn_backend.llm.model import Model

PROMPTS = ("Hello world", "Once upon a time", "the cat",
           "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def greedy_with_margins(ctx, prompt, steps):
    model, batch = ctx.model, Batch(64)
    ctx.clear()
    tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    index, pos, out, margins = batch.add_sequence(tokens, 0, 0), len(tokens), [], []
    for _ in range(steps):
        assert ctx.decode(batch) == 0
        row = np.sort(ctx.logits_row(index))
        margins.append(float(row[-1] - row[-2]))
        out.append(int(np.argmax(ctx.logits_row(index))))
        batch.clear()
        index = batch.add(out[-1], pos, 0, True)
        pos += 1
    return out, margins


def test_writing_is_fast(tmp_path):
    """Fast enough to write per test (about 15 ms here; the bound leaves room for a loaded
    machine: it catches a writer gone quadratic, not a slow run)."""
    start = time.perf_counter()
    write_tiny_llama(tmp_path / "t.gguf", seed=3)
    assert time.perf_counter() - start < 10.0


def test_greedy_output_is_varied_with_margins(tiny_model):
    with Context(tiny_model, n_ctx=512, n_batch=64, n_threads=2) as ctx:
        for prompt in PROMPTS:
            tokens, margins = greedy_with_margins(ctx, prompt, 32)
            assert len(set(tokens)) >= 24, (prompt, tokens)
            # float error between batch shapes is ~1e-5; these prompts stay far from ties
            assert min(margins) > 1e-3, (prompt, min(margins))
            text = tiny_model.detokenize(tokens)
            assert "\ufffd" not in text  # byte-fallback rows are damped: whole pieces


def test_models_differ_by_seed(tiny_model, tiny_model_path_b):
    with Model.load(tiny_model_path_b) as other:
        assert other.n_vocab == tiny_model.n_vocab
        with Context(tiny_model, n_ctx=256, n_batch=64, n_threads=1) as a, \
                Context(other, n_ctx=256, n_batch=64, n_threads=1) as b:
            tokens_a, _ = greedy_with_margins(a, "the cat", 8)
            assert tokens_a != greedy_with_margins(b, "the cat", 8)[0]


def test_quantized_variant(tmp_path):
    path = write_tiny_llama(tmp_path / "q8.gguf", seed=0, quant="q8_0")
    assert not (tmp_path / "q8.f32.gguf").exists()
    with Model.load(path) as model:
        assert "Q8_0" in model.description
        with Context(model, n_ctx=256, n_batch=64, n_threads=1) as ctx:
            tokens, _ = greedy_with_margins(ctx, "Hello world", 8)
            assert len(set(tokens)) >= 4
    with pytest.raises(errors.InvalidArgument):
        quantize_model(path, tmp_path / "x.gguf", "q3_nope")
    with pytest.raises(errors.ModelNotFound):
        quantize_model(tmp_path / "missing.gguf", tmp_path / "x.gguf", "q8_0")
