"""Chains that start with top_k run on the K + 1 best logits (llm/top_k.py): the same tokens,
draw for draw, as llama.cpp's llama_sampler_sample over the whole vocabulary with the full
chain (logit_bias first), and the whole row where a tie makes the few candidates ambiguous."""
from __future__ import annotations

import ctypes
import math

import llama_cpp.llama_cpp as C
import numpy as np
import pytest

from wasi_nn_backend.config import SamplingParams
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.grammar import TOKEN_DATA
from wasi_nn_backend.llm.model import Model
from wasi_nn_backend.llm.sampler import Sampler
from wasi_nn_backend.llm.sampler_chain import (add_bias, add_history, add_selection,
                                               bias_entries, top_k_first)
from wasi_nn_backend.llm.top_k import TopK
from wasi_nn_backend.testing.tiny_model import write_tiny_llama

N_VOCAB = 4096
CHAINS = {
    "server defaults": {},
    "ignore_eos": {"ignore_eos": True},
    "biases": {"logit_bias": ((7, 3.5), (9, -2.0), (7, 0.25), (11, -math.inf))},
    "force": {"logit_bias": ((123, math.inf),)},
    "top_k 1": {"top_k": 1},
    "top_k 300 (bucket sort)": {"top_k": 300, "top_p": 1.0, "min_p": 0.0},
    "typical, xtc, dynatemp": {"typical_p": 0.9, "xtc_probability": 0.5, "xtc_threshold": 0.05,
                               "dynatemp_range": 0.3, "temperature": 1.1},
    "hot": {"temperature": 3.0, "top_p": 1.0, "min_p": 0.0},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_tiny_llama(tmp_path_factory.mktemp("topk") / "tiny-4k.gguf", seed=3,
                            n_vocab=N_VOCAB)
    loaded = Model.load(str(path))
    yield loaded
    loaded.close()


def reference_chain(model, params):
    """The full chain as it was built before top_k.py: logit_bias in it, for
    llama_sampler_sample (or llama_sampler_apply on the row in id order)."""
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    add_bias(chain, model, bias_entries(model, params))
    add_history(chain, model, params, 512)
    add_selection(chain, model, params)
    return chain


def reference_pick(chain, row):
    """llama_sampler_sample's own steps on a row: every token in id order, apply, accept."""
    cands = np.zeros(len(row), dtype=TOKEN_DATA)
    cands["id"] = np.arange(len(row))
    cands["logit"] = row
    array = C.llama_token_data_array(data=cands.ctypes.data_as(C.llama_token_data_p),
                                     size=len(row), selected=-1, sorted=False)
    C.llama_sampler_apply(chain, ctypes.byref(array))
    token = int(array.data[array.selected].id)
    C.llama_sampler_accept(chain, token)
    return token


class Rows:
    """A stand-in for a Context that serves given logits rows (Sampler.sample's view)."""

    def __init__(self, model, rows):
        self.model, self.rows = model, rows

    def has_logits(self, index):
        return 0 <= index < len(self.rows)

    def logits_view(self, index):
        return self.rows[index]


@pytest.mark.parametrize("extra", CHAINS.values(), ids=CHAINS.keys())
def test_same_tokens_as_llama_sampler_sample_while_generating(model, extra):
    """Teacher-forced on the reference's tokens: both samplers see the same logits each step
    and, seeded alike, must draw alike."""
    params = SamplingParams(seed=77, **extra)
    assert top_k_first(model, params, 512) == params.top_k
    chain = reference_chain(model, params)
    batch = Batch(64)
    with Context(model, n_ctx=512, n_batch=64, n_threads=2) as context, \
            Sampler(model, params, n_ctx=512) as sampler:
        assert not sampler.releases_gil
        tokens = model.tokenize("Hello world, once upon a time", add_special=True,
                                parse_special=True)
        index, pos = batch.add_sequence(tokens, 0, 0), len(tokens)
        picked = []
        for _ in range(48):
            assert context.decode(batch) == 0
            expected = int(C.llama_sampler_sample(chain, context.handle, index))
            assert sampler.sample(context, index) == expected
            picked.append(expected)
            batch.clear()
            index = batch.add(expected, pos, 0, True)
            pos += 1
    C.llama_sampler_free(chain)
    if extra is CHAINS["force"]:
        assert set(picked) == {123}
    else:
        assert len(set(picked)) > 4


@pytest.mark.parametrize("extra", CHAINS.values(), ids=CHAINS.keys())
def test_same_tokens_on_rows_with_ties_infinities_and_nan(model, extra):
    """Rows built to defeat the candidates (ties at and above the K-th value, -inf, few
    finite values, a NaN, flat rows) go to the whole row; every row, the reference's token."""
    params = SamplingParams(seed=5, **extra)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        row = (rng.standard_normal(N_VOCAB) * (0.01 if i % 7 == 0 else 4)).astype(np.float32)
        kind = i % 6
        if kind == 1:   # ties among the best
            order = np.argsort(row)[::-1]
            row[order[3]] = row[order[4]]
            row[order[params.top_k]] = row[order[params.top_k - 1]]
        elif kind == 2:  # quantized logits: ties everywhere
            row = np.round(row).astype(np.float32)
        elif kind == 3:  # only a few finite values
            row[:] = -np.inf
            row[rng.choice(N_VOCAB, 5, replace=False)] = rng.standard_normal(5)
        elif kind == 4:  # an end-of-generation token on top
            row[2] = row.max() + 1
        elif kind == 5 and i % 4 == 1:
            row[17] = np.nan
        rows.append(row)
    chain = reference_chain(model, params)
    context = Rows(model, rows)
    with Sampler(model, params, n_ctx=512) as sampler:
        for index, row in enumerate(rows):
            if np.isnan(row).any():
                continue   # llama.cpp's own order over NaN is its sort's business
            assert sampler.sample(context, index) == reference_pick(chain, row.copy()), index
    C.llama_sampler_free(chain)


def test_candidates_hold_the_k_plus_one_best_or_say_no():
    rng = np.random.default_rng(2)
    finder = TopK(40, {}, 32000)
    for scale in (0.001, 0.5, 4.0, 60.0):   # the margin doubles and halves to fit
        row = (rng.standard_normal(32000) * scale).astype(np.float32)
        assert finder.select(row)
        cands = np.frombuffer((ctypes.c_char * (41 * TOKEN_DATA.itemsize)).from_address(
            ctypes.addressof(finder._array.data.contents)), dtype=TOKEN_DATA)
        best = np.argsort(row)[::-1][:41]
        assert cands["id"].tolist() == best.tolist()
        assert cands["logit"].tolist() == row[best].tolist()
    tied = np.zeros(32000, dtype=np.float32)
    assert not finder.select(tied)
    assert not finder.select(np.full(32000, -np.inf, dtype=np.float32))
    assert not finder.select(np.array([1.0, np.nan] * 16000, dtype=np.float32))


def test_only_chains_that_start_with_top_k(model):
    for extra in ({"temperature": 0}, {"top_k": 0}, {"top_k": N_VOCAB}, {"mirostat": 2},
                  {"top_n_sigma": 1.5}, {"repeat_penalty": 1.2}, {"presence_penalty": 0.5},
                  {"dry_multiplier": 0.8}):
        params = SamplingParams(**extra)
        assert top_k_first(model, params, 512) == 0, extra
    assert top_k_first(model, SamplingParams(repeat_penalty=1.2, penalty_last_n=0), 512) == 40


def test_xtc_in_a_grammar_chain_picks_from_what_xtc_left(model):
    """Regression: XTC drops the best candidates by moving the array's data pointer; the
    grammar path read the pick from the buffer's start instead (the top token XTC dropped)."""
    a, b, c = 5 + ord("a"), 5 + ord("b"), 5 + ord("c")
    row = np.full(N_VOCAB, -10.0, dtype=np.float32)
    row[[a, b, c]] = 5.0, 4.3, 3.5   # p ~ 0.6, 0.3, 0.13: XTC keeps only the last >= 0.1
    params = SamplingParams(grammar="root ::= [abc]+", xtc_probability=1.0, xtc_threshold=0.1,
                            temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    with Sampler(model, params, n_ctx=512) as sampler:
        assert [sampler.sample(Rows(model, [row]), 0) for _ in range(5)] == [c] * 5
