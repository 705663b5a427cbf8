"""engine.sampling_pool: a step's sampler chains on several threads pick exactly the tokens one
thread picks (each chain has its own RNG and reads the logits only), outcomes come back in
order, and a sampler's exception comes back in its place."""
from __future__ import annotations

import contextlib
import threading

import pytest

from wasi_nn_backend.config import SamplingParams
from wasi_nn_backend.engine.sampling_pool import SamplingPool, pick_tokens
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.sampler import Sampler

SEQUENCES = 8


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 2, 5, 9])
def test_map_keeps_the_order_and_returns_errors_in_place(workers, count):
    pool = SamplingPool(workers, "test")
    try:
        threads: set[int] = set()

        def work(item: int) -> int:
            threads.add(threading.get_ident())
            if item == 3:
                raise ValueError("three")
            return item * 10

        outcomes = pool.map(work, list(range(count)))
        assert [value for value, _ in outcomes] == [None if i == 3 else i * 10
                                                    for i in range(count)]
        errors = [(i, str(error)) for i, (_, error) in enumerate(outcomes) if error]
        assert errors == ([(3, "three")] if count > 3 else [])
        assert len(threads) == min(workers + 1, count)   # every part on its own thread
    finally:
        pool.close()


def test_a_closed_pool_runs_everything_on_the_caller():
    pool = SamplingPool(2, "test")
    pool.close()
    pool.close()
    me = threading.get_ident()
    assert pool.map(lambda item: (item, threading.get_ident() == me), [1, 2, 3]) == \
        [((1, True), None), ((2, True), None), ((3, True), None)]


@contextlib.contextmanager
def decoded(model):
    """A context that decoded one token on each of SEQUENCES sequences (batch index = seq)."""
    with Context(model, n_ctx=64 * SEQUENCES, n_batch=64, n_seq_max=SEQUENCES,
                 n_threads=2) as context:
        batch = Batch(64)
        for seq in range(SEQUENCES):
            batch.add(seq + 5, 0, seq, True)
        assert context.decode(batch) == 0
        yield context


def _picks(model, params_list):
    """(batch index, sampler) for each sequence, as the engine passes them."""
    return [(index, Sampler(model, params, n_ctx=256))
            for index, params in enumerate(params_list)]


@pytest.mark.parametrize("workers", [1, 3])
def test_pooled_chains_pick_what_one_thread_picks(tiny_model, workers):
    """Eight sequences decoded together; seeded sampled chains that are one C call (a
    repeat penalty before top_k: not llm/top_k.py's) and a greedy one, which stays on the
    caller, step 12 times over the same logits, pooled and not: the same tokens."""
    params = [SamplingParams(temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=seed,
                             repeat_penalty=1.1) for seed in range(SEQUENCES - 1)] + \
        [SamplingParams(temperature=0)]
    with decoded(tiny_model) as context:
        runs = []
        for pool in (None, SamplingPool(workers, "test")):
            picks = _picks(tiny_model, params)
            assert [sampler.releases_gil for _, sampler in picks] == \
                [True] * (SEQUENCES - 1) + [False]
            tokens = [[token for token, error in pick_tokens(pool, context, picks)]
                      for _ in range(12)]
            runs.append(tokens)
            for _, sampler in picks:
                sampler.close()
            if pool is not None:
                pool.close()
        assert runs[0] == runs[1]
        assert len({tuple(step) for step in runs[0]}) > 1   # the chains did sample


def test_greedy_rows_together_pick_what_each_picks_alone(tiny_model):
    """The fast-greedy samplers' argmax is taken over the step's rows in one call: with
    biases (a ban on each row's own best, a boost, a force), in any order of rows, and with
    other samplers between them, the tokens each sampler picks alone."""
    with decoded(tiny_model) as context:
        best = [int(context.logits_view(i).argmax()) for i in range(SEQUENCES)]
        params = [SamplingParams(temperature=0),
                  SamplingParams(temperature=0, logit_bias=((best[1], float("-inf")),)),
                  SamplingParams(temperature=0, logit_bias=((7, 50.0),)),
                  SamplingParams(temperature=0.7, seed=3),
                  SamplingParams(temperature=0, logit_bias=((9, float("inf")),)),
                  SamplingParams(temperature=0, ignore_eos=True),
                  SamplingParams(temperature=0), SamplingParams(temperature=0)]
        for order in (list(range(SEQUENCES)), list(range(SEQUENCES))[::-1], [6, 2, 0, 5]):
            picks = [(i, Sampler(tiny_model, params[i], n_ctx=256)) for i in order]
            alone = [Sampler(tiny_model, params[i], n_ctx=256) for i in order]
            together = [token for token, _ in pick_tokens(None, context, picks)]
            assert together == [sampler.sample(context, index)
                                for (index, _), sampler in zip(picks, alone)]
            for sampler in [s for _, s in picks] + alone:
                sampler.close()
        assert together[:3] == [best[6], 7, best[0]]   # row 2 boosts token 7
