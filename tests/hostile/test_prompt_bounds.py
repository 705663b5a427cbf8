"""Prompts that cost the tokenizer more than their answer is worth: a prompt that cannot fit
the context is refused (prompt_too_long) before it is tokenized, and the time tokenizing takes
counts against the request's deadline.

llama.cpp's SPM tokenizer is quadratic in byte-fallback text (each fallback symbol reserves the
output vector to its exact new size): 64 KiB of NUL bytes took seconds, on the caller's thread,
before any length check and outside every deadline.
"""
from __future__ import annotations

import json
import random

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.engine.clock import FakeClock
from wasi_nn_backend.core.request import FinishReason
from wasi_nn_backend.errors import ErrorCode, PromptTooLong
from wasi_nn_backend.llm.model import Model

N_CTX = 256
CONFIG = {"logging": {"level": "error"}, "model": {"n_ctx": N_CTX, "threads": 1}}


@pytest.fixture()
def tokenized(monkeypatch):
    """The lengths of the texts Model.tokenize was given."""
    lengths: list[int] = []
    real = Model.tokenize

    def spy(self, text, **kwargs):
        lengths.append(len(text))
        return real(self, text, **kwargs)
    monkeypatch.setattr(Model, "tokenize", spy)
    return lengths


@pytest.mark.parametrize("size", [64 << 10, 256 << 10, 16 << 20])
def test_a_nul_prompt_longer_than_the_context_is_refused_untokenized(tiny_model_path, tokenized,
                                                                     size):
    code, ctx = nn.init_backend_with_config(json.dumps(CONFIG))
    try:
        code, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, json.dumps(CONFIG))
        code, ex = nn.init_execution_context(ctx, graph)
        prompt = b"\x00" * size
        code = nn.set_input(ctx, ex, 0, nn.Tensor([size], nn.TensorType.U8, prompt))
        assert code == ErrorCode.PROMPT_TOO_LONG
        assert not any(n > N_CTX for n in tokenized)
        out = bytearray(64)   # the context still works
        code = nn.set_input(ctx, ex, 0, nn.Tensor([5], nn.TensorType.U8, b"Hello"))
        assert code == ErrorCode.SUCCESS
        nn.set_input(ctx, ex, 1, b'{"temperature": 0, "max_tokens": 2}')
        assert nn.compute(ctx, ex) == ErrorCode.SUCCESS
        assert nn.get_output(ctx, ex, 0, out)[0] == ErrorCode.SUCCESS
    finally:
        nn.deinit_backend(ctx)


def test_every_entry_point_bounds_the_prompt_before_tokenizing(tiny_model_path, tokenized):
    long = "\x01" * (8 * N_CTX)
    with Backend(CONFIG) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        with graph.session() as session:
            with pytest.raises(PromptTooLong):
                session.complete(long, max_tokens=1)
            with pytest.raises(PromptTooLong, match="message"):
                session.chat(long, max_tokens=1)
            assert session.chat("Hi", max_tokens=1, temperature=0).text is not None
        embedder = backend.load(tiny_model_path, {**CONFIG, "embedding": True})
        with embedder.session() as session, pytest.raises(PromptTooLong):
            session.embed(["short", long])
    assert not any(n > N_CTX for n in tokenized)


def test_the_bound_never_exceeds_the_real_token_count(tiny_model):
    """The lower bound is a bound: random texts mixing the vocabulary's characters, control
    characters, emoji and text the vocabulary lacks never get a bound above their tokens."""
    from wasi_nn_backend.llm.token_bound import TokenBound
    bound = TokenBound(tiny_model)
    assert bound.enabled
    rng = random.Random(13)
    alphabet = ["a", "b", " ", "the", "\x00", "\x07", "\n", "é", "\U0001F600", "<s>", "语"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        tokens = tiny_model.tokenize(text, add_special=False, parse_special=True)
        assert bound.min_tokens(text, len(text.encode()), limit=10**9) <= len(tokens), text


def test_tokenizing_time_counts_against_the_deadline(tiny_model_path, monkeypatch):
    """A request's deadline starts when the call does, not after its prompt is tokenized."""
    clock = FakeClock()
    real = Model.tokenize

    def slow(self, text, **kwargs):
        clock.advance(5.0)   # as if the text took five seconds to tokenize
        return real(self, text, **kwargs)
    with Backend({**CONFIG, "backend": {"default_task_timeout_ms": 2000}}, clock=clock) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        with graph.session() as session:
            monkeypatch.setattr(Model, "tokenize", slow)
            result = session.complete("Once upon a time", max_tokens=4, temperature=0)
    assert result.finish_reason == FinishReason.TIMEOUT and result.code == ErrorCode.TIMEOUT
    assert not result.generated_tokens
