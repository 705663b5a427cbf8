"""llm/embeddings.py on a Context made with embeddings=True: pooled vectors per sequence, one
vector per token with pooling none, how the pooling types relate, and NULL answers raised."""
from __future__ import annotations

import numpy as np
import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.llm import embeddings
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.pooling import pooling_param

TEXTS = ("hello world", "the cat sat on the dog")


def _decode(ctx: Context, token_lists: list[list[int]]) -> list[tuple[int, int]]:
    """Each token list in its own sequence, every token an output; (start, length) spans."""
    batch = Batch(ctx.n_batch)
    spans = []
    for seq, tokens in enumerate(token_lists):
        spans.append((batch.n_tokens, len(tokens)))
        batch.add_sequence(tokens, 0, seq, logits_all=True)
    assert ctx.decode(batch) == 0
    return spans


@pytest.fixture(scope="module")
def token_lists(tiny_model):
    return [tiny_model.tokenize(t, add_special=True, parse_special=True) for t in TEXTS]


def _context(model, pooling):
    return Context(model, n_ctx=256, n_batch=256, n_seq_max=4, n_threads=1,
                   embeddings=True, pooling=pooling)


def _pooled(model, pooling, token_lists):
    with _context(model, pooling) as ctx:
        assert ctx.pooling == pooling
        _decode(ctx, token_lists)
        return [embeddings.pooled(ctx, seq) for seq in range(len(token_lists))]


def _per_token(model, token_lists):
    with _context(model, "none") as ctx:
        spans = _decode(ctx, token_lists)
        return [np.stack([embeddings.token(ctx, start + i) for i in range(length)])
                for start, length in spans]


def test_a_generative_gguf_names_no_pooling(tiny_model):
    assert embeddings.gguf_pooling(tiny_model) is None
    assert tiny_model.n_embd_out == tiny_model.n_embd == 64


def test_pooled_vectors_have_n_embd_floats_and_differ_per_text(tiny_model, token_lists):
    first, second = _pooled(tiny_model, "mean", token_lists)
    assert first.shape == second.shape == (64,) and first.dtype == np.float32
    assert np.abs(first - second).max() > 0.1


def test_the_pooling_types_are_means_and_rows_of_the_token_vectors(tiny_model, token_lists):
    rows = _per_token(tiny_model, token_lists)
    assert [r.shape for r in rows] == [(len(t), 64) for t in token_lists]
    for pooling, pick in (("mean", lambda r: r.mean(axis=0)), ("cls", lambda r: r[0]),
                          ("last", lambda r: r[-1])):
        for got, row in zip(_pooled(tiny_model, pooling, token_lists), rows):
            np.testing.assert_allclose(got, pick(row), atol=1e-5)


def test_a_sequence_not_in_the_last_decode_has_no_vector(tiny_model, token_lists):
    with _context(tiny_model, "mean") as ctx:
        _decode(ctx, token_lists[:1])
        with pytest.raises(errors.BackendRuntimeError, match="sequence 1"):
            embeddings.pooled(ctx, 1)
    with _context(tiny_model, "none") as ctx:
        _decode(ctx, token_lists[:1])
        with pytest.raises(errors.InvalidArgument, match="no output"):
            embeddings.token(ctx, len(token_lists[0]))


def test_unknown_pooling_is_refused():
    with pytest.raises(errors.InvalidArgument, match="pooling"):
        pooling_param("max")
    assert pooling_param(None) == -1
