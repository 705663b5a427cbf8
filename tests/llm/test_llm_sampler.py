"""llm.Sampler without grammars: chain construction from SamplingParams and determinism."""
from __future__ import annotations

import math

import pytest

from wasi_nn_backend.testing.tiny_model import IM_END
from wasi_nn_backend import errors
from wasi_nn_backend.config import SamplingParams
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.sampler import Sampler

GREEDY = {"temperature": 0.0}


@pytest.fixture(scope="module")
def ctx(tiny_model):
    with Context(tiny_model, n_ctx=512, n_batch=64, n_seq_max=2, n_threads=2) as context:
        yield context


def generate(ctx, params, prompt="Hello world", steps=16, stop_at_eog=True):
    """Sample `steps` tokens on sequence 0 (cleared first); returns the tokens."""
    model, batch = ctx.model, Batch(64)
    ctx.seq_rm(0)
    tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    with Sampler(model, params, n_ctx=ctx.n_ctx) as sampler:
        sampler.accept_prompt(tokens)
        index, pos, out = batch.add_sequence(tokens, 0, 0), len(tokens), []
        for _ in range(steps):
            assert ctx.decode(batch) == 0
            token = sampler.sample(ctx, index)
            out.append(token)
            if stop_at_eog and model.is_eog(token):
                break
            batch.clear()
            index = batch.add(token, pos, 0, True)
            pos += 1
    return out


def test_greedy_is_deterministic_and_varied(ctx):
    first = generate(ctx, SamplingParams(**GREEDY))
    assert first == generate(ctx, SamplingParams(**GREEDY))
    assert len(set(first)) >= 10


def test_same_seed_same_tokens(ctx):
    params = SamplingParams(temperature=1.0, seed=1234)
    assert generate(ctx, params) == generate(ctx, params)
    others = [generate(ctx, SamplingParams(temperature=1.0, seed=s)) for s in (1, 2, 3)]
    assert any(o != generate(ctx, params) for o in others)


def test_random_seed_runs(ctx):
    # seed -1 draws a random seed: assert only what holds for every draw (an end-of-generation
    # token may come at any step, so generation does not stop at one here).
    tokens = generate(ctx, SamplingParams(seed=-1), stop_at_eog=False)
    assert len(tokens) == 16 and all(ctx.model.valid_token(t) for t in tokens)


def test_logit_bias_forces_and_forbids(ctx):
    greedy = generate(ctx, SamplingParams(**GREEDY))
    forced = generate(ctx, SamplingParams(temperature=0.8, seed=1,
                                          logit_bias=((700, math.inf),)), steps=5)
    assert forced == [700] * 5
    banned = generate(ctx, SamplingParams(**GREEDY, logit_bias=((greedy[0], -math.inf),)))
    assert banned[0] != greedy[0] and greedy[0] not in banned


def test_ignore_eos_bans_every_eog(ctx):
    params = SamplingParams(temperature=1.0, seed=3, ignore_eos=True,
                            logit_bias=((IM_END, 50.0),))
    assert not any(ctx.model.is_eog(t) for t in generate(ctx, params, steps=8))
    assert generate(ctx, SamplingParams(**GREEDY, logit_bias=((IM_END, 50.0),))) == [IM_END]


def test_penalties_change_greedy_output(ctx):
    boosted = ((700, 30.0),)
    plain = generate(ctx, SamplingParams(**GREEDY, logit_bias=boosted), steps=6)
    assert plain == [700] * 6
    penalised = generate(ctx, SamplingParams(**GREEDY, logit_bias=boosted,
                                             presence_penalty=50.0), steps=6)
    assert penalised[0] == 700 and 700 not in penalised[1:]
    repeat = generate(ctx, SamplingParams(**GREEDY, logit_bias=boosted, repeat_penalty=100.0,
                                          penalty_last_n=-1), steps=6)
    assert repeat != plain


def test_prompt_tokens_feed_the_penalties(ctx):
    prompt = "the cat"
    prompt_tokens = ctx.model.tokenize(prompt, add_special=False, parse_special=False)
    boost = tuple((t, 30.0) for t in prompt_tokens)
    plain = generate(ctx, SamplingParams(**GREEDY, logit_bias=boost), prompt=prompt, steps=1)
    assert plain[0] in prompt_tokens
    penalised = generate(ctx, SamplingParams(**GREEDY, logit_bias=boost, presence_penalty=80.0),
                         prompt=prompt, steps=1)
    assert penalised[0] not in prompt_tokens


@pytest.mark.parametrize("mirostat", [1, 2])
def test_mirostat_runs(ctx, mirostat):
    params = SamplingParams(mirostat=mirostat, seed=7, mirostat_tau=3.0)
    tokens = generate(ctx, params, steps=10, stop_at_eog=False)
    assert len(tokens) == 10 and tokens == generate(ctx, params, steps=10, stop_at_eog=False)


def test_every_sampler_in_one_chain(ctx):
    params = SamplingParams(temperature=0.9, top_k=100000, top_p=0.9, min_p=0.02,
                            typical_p=0.95, top_n_sigma=2.0, xtc_probability=0.5,
                            xtc_threshold=0.05, dry_multiplier=0.8,
                            dry_sequence_breakers=("\n", "", "x" * 60 + "é"),
                            dynatemp_range=0.5, dynatemp_exponent=1.5, repeat_penalty=1.1,
                            frequency_penalty=0.2, presence_penalty=0.1, penalty_last_n=-1,
                            min_keep=0, seed=11)
    tokens = generate(ctx, params, steps=12, stop_at_eog=False)
    assert tokens == generate(ctx, params, steps=12, stop_at_eog=False)


def test_bad_params_raise(ctx):
    model = ctx.model
    for params in (SamplingParams(logit_bias=((model.n_vocab, 1.0),)),
                   SamplingParams(logit_bias=((5, math.nan),)),
                   SamplingParams(repeat_penalty=0.0)):
        with pytest.raises(errors.InvalidArgument):
            Sampler(model, params, n_ctx=512)


def test_sample_without_logits_raises(ctx):
    batch = Batch(4)
    ctx.seq_rm(0)
    batch.add(1, 0, 0, False)
    batch.add(20, 1, 0, True)
    assert ctx.decode(batch) == 0
    with Sampler(ctx.model, SamplingParams(), n_ctx=512) as sampler:
        for index in (0, 2, -1):
            with pytest.raises(errors.InvalidArgument):
                sampler.sample(ctx, index)
        assert ctx.model.valid_token(sampler.sample(ctx, 1))


def test_top_probs(ctx):
    batch = Batch(4)
    ctx.seq_rm(0)
    batch.add(1, 0, 0, True)
    assert ctx.decode(batch) == 0
    with Sampler(ctx.model, SamplingParams(), n_ctx=512) as sampler:
        top = sampler.top_probs(ctx, 0, 5)
        assert len(top) == 5 and sampler.top_probs(ctx, 0, 0) == []
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-9
        row = ctx.logits_row(0)
        assert top[0][0] == int(row.argmax())
        assert len(sampler.top_probs(ctx, 0, 10**6)) == ctx.model.n_vocab


def test_reset_and_close(ctx):
    params = SamplingParams(temperature=1.0, seed=99)
    sampler = Sampler(ctx.model, params, n_ctx=512)
    sampler.reset()
    sampler.close()
    sampler.close()
    with pytest.raises(errors.BackendRuntimeError):
        sampler.accept_prompt([1, 2])


@pytest.mark.parametrize("extra", [{}, {"ignore_eos": True},
                                   {"logit_bias": ((IM_END, -math.inf), (700, -math.inf))},
                                   {"logit_bias": ((IM_END, 50.0), (IM_END, 1.0), (700, -3.0))},
                                   {"logit_bias": ((700, math.inf),)}])
def test_fast_greedy_picks_what_the_c_chain_picks(ctx, extra, monkeypatch):
    params = SamplingParams(**GREEDY, **extra)
    with Sampler(ctx.model, params, n_ctx=ctx.n_ctx) as sampler:
        assert sampler.fast_greedy
    fast = generate(ctx, params, steps=24, stop_at_eog=False)
    original = Sampler.__init__

    def chain_only(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.fast_greedy = False
    monkeypatch.setattr(Sampler, "__init__", chain_only)
    assert generate(ctx, params, steps=24, stop_at_eog=False) == fast


def test_fast_greedy_only_when_nothing_else_shapes_the_pick(ctx):
    for params in (SamplingParams(temperature=0.5), SamplingParams(**GREEDY, repeat_penalty=1.2),
                   SamplingParams(**GREEDY, mirostat=2), SamplingParams(**GREEDY, grammar='root ::= "a"'),
                   SamplingParams(**GREEDY, dry_multiplier=0.5)):
        with Sampler(ctx.model, params, n_ctx=ctx.n_ctx) as sampler:
            assert not sampler.fast_greedy


def test_fast_greedy_bias_check_equals_adding_the_biases(ctx):
    import numpy as np
    rng = np.random.default_rng(7)
    n = ctx.model.n_vocab
    for trial in range(200):
        logits = rng.normal(size=n).astype(np.float32)
        picks = rng.choice(n, size=4, replace=False)
        if trial % 3 == 0:
            picks[0] = int(np.argmax(logits))  # a bias on the raw winner
        logits[picks[1]] = logits.max()        # ties: the first maximum wins
        entries = [(int(t), float(b)) for t, b in zip(picks, rng.normal(scale=2, size=4))]
        entries.append((int(picks[2]), -math.inf))
        entries.append((int(picks[3]), 0.5))   # repeated tokens add up
        with Sampler(ctx.model, SamplingParams(**GREEDY, logit_bias=tuple(entries)),
                     n_ctx=ctx.n_ctx) as sampler:
            expected = logits.copy()
            for token, bias in entries:
                expected[token] += np.float32(bias)
            assert sampler._greedy(logits) == int(np.argmax(expected))
