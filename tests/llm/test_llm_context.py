"""llm.Context and llm.Batch: multi-sequence decoding, KV edits, state round trips, and the
llama.cpp abort paths that must be exceptions instead."""
from __future__ import annotations

import numpy as np
import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context

PROMPTS = ("Once upon a time", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture
def ctx(tiny_model):
    with Context(tiny_model, n_ctx=512, n_batch=64, n_seq_max=4, n_threads=2) as context:
        yield context


def prompt_tokens(model, text):
    return model.tokenize(text, add_special=True, parse_special=True)


def greedy(ctx, prompts, steps=12, seqs=None):
    """Greedy continuations of several prompts decoded together, one batch per step."""
    model, batch = ctx.model, Batch(ctx.n_batch)
    seqs = seqs or list(range(len(prompts)))
    index, pos, out = {}, {}, {s: [] for s in seqs}
    for seq, text in zip(seqs, prompts):
        tokens = prompt_tokens(model, text)
        index[seq], pos[seq] = batch.add_sequence(tokens, 0, seq), len(tokens)
    for _ in range(steps):
        assert ctx.decode(batch) == 0
        batch.clear()
        for seq in seqs:
            token = int(np.argmax(ctx.logits_row(index[seq])))
            out[seq].append(token)
            index[seq] = batch.add(token, pos[seq], seq, True)
            pos[seq] += 1
    return [out[s] for s in seqs]


def test_two_sequences_in_one_batch_match_each_alone(ctx):
    alone = []
    for text in PROMPTS:
        alone += greedy(ctx, [text])
        ctx.clear()
    together = greedy(ctx, list(PROMPTS), seqs=[2, 3])
    assert together == alone
    assert len(set(alone[0])) >= 8, "greedy output should vary"


def test_seq_rm_then_shift_keeps_decoding(ctx):
    model, batch = ctx.model, Batch(64)
    tokens = prompt_tokens(model, "the cat sat on the mat and the dog ran to the sun")
    batch.add_sequence(tokens, 0, 0)
    assert ctx.decode(batch) == 0
    n = len(tokens)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, n - 1)
    assert ctx.can_shift()
    keep, discard = 1, 4
    assert ctx.seq_rm(0, keep, keep + discard)
    ctx.seq_add(0, keep + discard, -1, -discard)
    assert ctx.seq_pos_max(0) == n - 1 - discard
    batch.clear()
    index = batch.add(tokens[-1], n - discard, 0, True)
    assert ctx.decode(batch) == 0
    assert np.isfinite(ctx.logits_row(index)).all()


def test_state_seq_round_trip_is_bit_exact(ctx):
    model, batch = ctx.model, Batch(64)
    tokens = prompt_tokens(model, "Hello world, the story")
    batch.add_sequence(tokens[:-1], 0, 1, logits_last=False)
    assert ctx.decode(batch) == 0
    state = ctx.state_seq_get(1)
    assert len(state) == ctx.state_seq_size(1) > 0

    def next_logits():
        batch.clear()
        index = batch.add(tokens[-1], len(tokens) - 1, 1, True)
        assert ctx.decode(batch) == 0
        row = ctx.logits_row(index)
        ctx.seq_rm(1, len(tokens) - 1, -1)
        return row

    before = next_logits()
    ctx.seq_rm(1)
    assert ctx.seq_pos_max(1) == -1
    assert ctx.state_seq_set(1, state)
    assert ctx.seq_pos_max(1) == len(tokens) - 2
    assert np.array_equal(next_logits(), before)
    assert ctx.state_seq_set(2, state)  # into another sequence, too
    assert ctx.seq_pos_max(2) == len(tokens) - 2


def test_seq_cp_shares_a_prefix(ctx):
    model, batch = ctx.model, Batch(64)
    tokens = prompt_tokens(model, "the dog ran")
    batch.add_sequence(tokens, 0, 0)
    assert ctx.decode(batch) == 0
    ctx.seq_cp(0, 3, 0, len(tokens) - 1)
    assert ctx.seq_pos_max(3) == len(tokens) - 2
    ctx.seq_keep(3)
    assert ctx.seq_pos_max(0) == -1 and ctx.seq_pos_max(3) == len(tokens) - 2


def test_abort_paths_raise(ctx):
    batch = Batch(128)
    batch.add_sequence(list(range(10, 75)), 0, 0)
    with pytest.raises(errors.BackendRuntimeError, match="n_batch"):
        ctx.decode(batch)  # 65 tokens > n_batch 64: a GGML_ASSERT in llama.cpp
    batch.clear()
    batch.add(10, 0, 4, True)
    with pytest.raises(errors.InvalidArgument, match="sequence id"):
        ctx.decode(batch)
    with pytest.raises(errors.InvalidArgument):
        ctx.decode(Batch(4))  # empty
    for call in (lambda: ctx.seq_rm(4), lambda: ctx.seq_pos_max(-1),
                 lambda: ctx.seq_cp(0, 9), lambda: ctx.state_seq_get(4)):
        with pytest.raises(errors.InvalidArgument):
            call()
    with pytest.raises(errors.InvalidArgument, match="no logits"):
        ctx.logits_row(0)


def test_logits_only_where_requested(ctx):
    batch = Batch(8)
    batch.add(1, 0, 0, False)
    batch.add(20, 1, 0, True)
    assert ctx.decode(batch) == 0
    assert not ctx.has_logits(0) and ctx.has_logits(1)
    with pytest.raises(errors.InvalidArgument):
        ctx.logits_row(0)
    assert ctx.logits_row(1).shape == (ctx.model.n_vocab,)


def test_decode_return_codes(tiny_model):
    with Context(tiny_model, n_ctx=32, n_batch=256, n_threads=1) as padded:
        # llama.cpp pads n_ctx up to a multiple of 256 but caps n_batch by the n_ctx asked for
        assert (padded.n_ctx, padded.n_batch) == (256, 32)
    with Context(tiny_model, n_ctx=256, n_batch=256, n_threads=1) as small:
        batch = Batch(256)
        batch.add_sequence([10] * 240, 0, 0)
        assert small.decode(batch) == 0
        batch.clear()
        batch.add_sequence([11] * 20, 240, 0)
        assert small.decode(batch) == 1  # no KV room: state unchanged
        assert small.seq_pos_max(0) == 239
        batch.clear()
        batch.add(12, 5, 0, True)  # position not after the sequence's last one
        assert small.decode(batch) == -1
        batch.clear()
        batch.add(tiny_model.n_vocab, 240, 0, True)  # token outside the vocabulary
        assert small.decode(batch) == -1
        assert not small.has_logits(0)
        batch.clear()
        batch.add(12, 240, 0, True)
        assert small.decode(batch) == 0 and small.has_logits(0)


def test_batch_capacity_and_bad_entries():
    batch = Batch(2)
    assert batch.add(5, 0, 0, False) == 0 and batch.add(6, 1, 0, True) == 1
    with pytest.raises(errors.BackendRuntimeError, match="full"):
        batch.add(7, 2, 0, True)
    with pytest.raises(errors.BackendRuntimeError):
        batch.add_sequence([1, 2, 3], 2, 0)
    batch.clear()
    assert batch.n_tokens == 0 and batch.capacity == 2
    for bad in ((-1, 0, 0), (1, -1, 0), (1, 0, -1), (1.5, 0, 0)):
        with pytest.raises(errors.InvalidArgument):
            batch.add(*bad, True)
    with pytest.raises(errors.InvalidArgument):
        Batch(0)
    batch.close()
    batch.close()
    with pytest.raises(errors.BackendRuntimeError):
        batch.add(1, 0, 0, True)


def test_impossible_context_settings(tiny_model):
    with pytest.raises(errors.BackendRuntimeError, match="n_seq_max"):
        Context(tiny_model, n_ctx=64, n_batch=8, n_seq_max=257)
    with pytest.raises(errors.InvalidArgument):
        Context(tiny_model, n_ctx=64, n_batch=8, n_ubatch=16)
    with pytest.raises(errors.InvalidArgument):
        Context(tiny_model, n_ctx=64, n_batch=8, flash_attn="off", type_v="q8_0")
    with pytest.raises(errors.InvalidArgument):
        Context(tiny_model, n_ctx=64, n_batch=8, type_k="q2_k")


def test_facts_and_perf(tiny_model):
    with Context(tiny_model, n_ctx=256, n_batch=32, n_seq_max=2, n_threads=1,
                 kv_unified=False) as split:
        assert split.n_ctx >= 256 and split.n_batch == 32 and split.n_seq_max == 2
        assert split.n_ctx_seq <= split.n_ctx
        with pytest.raises(errors.InvalidArgument, match="kv_unified"):
            split.seq_cp(0, 1, 2, 5)  # partial copy across split streams asserts in C
        assert {"t_eval_ms", "n_eval"} <= set(split.perf())
    split.close()
    with pytest.raises(errors.BackendRuntimeError):
        split.decode(Batch(1))


def test_logits_rows_are_the_ones_llama_cpp_gives_per_batch_index(ctx):
    import llama_cpp.llama_cpp as C
    batch = Batch(64)
    batch.add_sequence(prompt_tokens(ctx.model, "Hello world"), 0, 0)      # output at its end
    cat = prompt_tokens(ctx.model, "the cat sat")
    batch.add_sequence(cat, 0, 1, logits_last=False)
    middle = batch.add(700, len(cat), 1, True)
    last = batch.add_sequence(prompt_tokens(ctx.model, "one two"), 0, 2)
    assert ctx.decode(batch) == 0
    wanted = [i for i in range(batch.n_tokens) if ctx.has_logits(i)]
    assert len(wanted) == 3 and middle in wanted and last in wanted
    for index in wanted:
        pointer = C.llama_get_logits_ith(ctx.handle, index)
        expected = np.ctypeslib.as_array(pointer, shape=(ctx.model.n_vocab,))
        np.testing.assert_array_equal(ctx.logits_view(index), expected)
    assert not ctx.logits_view(last).flags.writeable


def test_batch_tracks_output_rows_and_largest_sequence():
    batch = Batch(16)
    assert batch.output_rows() == {} and batch.max_seq_id == -1
    batch.add(5, 0, 2, False)
    batch.add(6, 1, 2, True)                              # row 0
    batch.add_sequence([7, 8, 9], 0, 5, logits_last=True)  # row 1 at index 4
    batch.add_sequence([1, 2], 0, 1, logits_all=True)      # rows 2, 3 at indices 5, 6
    batch.add_sequence([3], 0, 0, logits_last=False)
    assert batch.output_rows() == {1: 0, 4: 1, 5: 2, 6: 3}
    assert batch.max_seq_id == 5
    assert [int(x) for x in batch.logits[:batch.n_tokens]] == [0, 1, 0, 0, 1, 1, 1, 0]
    rows = batch.output_rows()
    rows[99] = 9  # a copy: the batch's own record is untouched
    assert 99 not in batch.output_rows()
    batch.clear()
    assert batch.output_rows() == {} and batch.max_seq_id == -1


def test_logits_views_follow_llama_cpp_as_output_counts_change(tiny_model):
    """The views of llama.cpp's logits buffer are cached by (address, rows); whatever the
    number of outputs per decode (llama.cpp regrows its buffer for more), every row read is
    the one llama_get_logits_ith gives."""
    import llama_cpp.llama_cpp as C
    with Context(tiny_model, n_ctx=1024, n_batch=64, n_seq_max=8, n_threads=2) as context:
        batch = Batch(64)
        positions = [0] * 8
        for step, outputs in enumerate((1, 3, 1, 8, 2, 8, 1)):
            batch.clear()
            for seq in range(outputs):
                batch.add(100 + step + seq, positions[seq], seq, True)
                positions[seq] += 1
            assert context.decode(batch) == 0
            assert not context.has_logits(outputs) and not context.has_logits(-1)
            for index in range(outputs):
                pointer = C.llama_get_logits_ith(context.handle, index)
                expected = np.ctypeslib.as_array(pointer, shape=(tiny_model.n_vocab,))
                np.testing.assert_array_equal(context.logits_view(index), expected)
        context.clear()
        assert not context.has_logits(0)


def test_logits_index_accepts_numpy_ints_not_floats(ctx):
    batch = Batch(8)
    batch.add(100, 0, 0, True)
    assert ctx.decode(batch) == 0
    assert ctx.has_logits(np.int64(0)) and not ctx.has_logits(0.0)
    np.testing.assert_array_equal(ctx.logits_view(np.int32(0)), ctx.logits_view(0))
    with pytest.raises(errors.InvalidArgument):
        ctx.logits_view(0.0)
