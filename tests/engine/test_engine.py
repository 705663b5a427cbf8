"""The engine through the Python API: continuous batching, prefix reuse, context shifting,
sampling and stop rules, on the tiny F32 model (greedy, so results are exact)."""
from __future__ import annotations

import threading

import pytest
from sessions_at_once import NO_DEADLINE

from wasi_nn_backend import Backend, FinishReason
from wasi_nn_backend.errors import ErrorCode, InvalidArgument, PromptTooLong

GREEDY = {"temperature": 0}
PROMPTS = ["The quick brown fox", "Once upon a time", "In the beginning", "Hello world",
           "A B C D", "1 2 3 4 5", "Numbers and words", "Zebra crossing"]


@pytest.fixture
def graph(tiny_model_path):
    with Backend(NO_DEADLINE) as backend:
        yield backend.load(tiny_model_path, {"model": {"n_ctx": 256, "n_seq_max": 8,
                                                       "n_batch": 64}})


def complete(graph, prompt, **kw):
    with graph.session() as session:
        return session.complete(prompt, **{**GREEDY, **kw})


def test_generates_text_and_usage(graph):
    c = complete(graph, "Hello", max_tokens=12)
    assert c.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
    assert 1 <= len(c.generated_tokens) <= 12 and c.code == ErrorCode.SUCCESS
    assert c.usage()["input_tokens"] == c.prompt_tokens > 0


def test_eight_concurrent_sessions_match_solo(graph):
    alone = [complete(graph, p, max_tokens=24).generated_tokens for p in PROMPTS]
    results = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))
    steps_before = graph.engine.counters.steps

    def run(i):
        with graph.session() as session:
            start.wait(10)
            results[i] = session.complete(PROMPTS[i], **GREEDY, max_tokens=24).generated_tokens
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == alone
    assert len(set(alone)) == len(alone)  # outputs differ: nothing is mixed between sessions
    steps = graph.engine.counters.steps - steps_before
    assert steps < sum(len(r) for r in results) / 2  # decoded together, not one by one


def test_steady_steps_give_what_a_bare_decode_loop_gives(graph):
    """Once a generation only decodes, steps reuse the last batch with new tokens and skip
    planning; the tokens must be those of the plainest loop over llama.cpp."""
    import numpy as np

    from wasi_nn_backend.llm.batch import Batch
    from wasi_nn_backend.llm.context import Context
    model = graph.engine.model
    before = graph.engine.counters.steady_steps
    ours = complete(graph, PROMPTS[0], max_tokens=40, ignore_eos=True).generated_tokens
    assert graph.engine.counters.steady_steps - before >= 30
    prompt = model.tokenize(PROMPTS[0], add_special=True, parse_special=True)
    with Context(model, n_ctx=256, n_batch=64, n_seq_max=1, n_threads=2) as ctx, \
            Batch(64) as batch:
        last = batch.add_sequence(prompt, 0, 0)
        assert ctx.decode(batch) == 0
        tokens = [int(np.argmax(ctx.logits_view(last)))]
        while len(tokens) < 40:
            batch.clear()
            batch.add(tokens[-1], len(prompt) + len(tokens) - 1, 0, True)
            assert ctx.decode(batch) == 0
            tokens.append(int(np.argmax(ctx.logits_view(0))))
    assert list(ours) == tokens


def test_long_prompt_is_prefilled_in_chunks(graph):
    prompt = " ".join(["word"] * 150)  # more tokens than n_batch (64)
    chunked = complete(graph, prompt, max_tokens=5)
    assert chunked.prefilled_tokens == chunked.prompt_tokens > 64


def test_completion_reuses_common_prefix(graph):
    with graph.session() as s:
        first = s.complete("The cat sat on the mat and", **GREEDY, max_tokens=4)
        second = s.complete("The cat sat on the mat and then", **GREEDY, max_tokens=4)
    assert second.reused_tokens >= first.prompt_tokens - 1
    assert second.prefilled_tokens == second.prompt_tokens - second.reused_tokens


def test_chat_turn_two_prefills_only_new_tokens(graph):
    with graph.session() as s:
        s.chat("Hello, my name is Alice.", **GREEDY, max_tokens=16)
        before = s.state.prefilled_tokens
        kv_before = len(s.state.kv_tokens)
        second = s.chat("What is my name?", **GREEDY, max_tokens=16)
        new_tokens = second.prompt_tokens - kv_before
        assert second.reused_tokens == kv_before
        assert s.state.prefilled_tokens - before == second.prefilled_tokens == new_tokens


def test_chat_reply_matches_a_fresh_session_given_the_same_history(graph):
    with graph.session() as s:
        s.chat("Hi there", **GREEDY, max_tokens=10)
        turn2 = s.chat("And again", **GREEDY, max_tokens=10)
        history = s.history
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[-1]["content"] == turn2.text


def test_context_shift_lets_generation_continue(tiny_model_path):
    with Backend(NO_DEADLINE) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 1},
                                               "memory": {"n_keep_tokens": 8}})
        with graph.session() as s:
            c = s.complete("Hello", **GREEDY, max_tokens=150, ignore_eos=True)
        assert len(c.generated_tokens) == 150 and c.code == ErrorCode.SUCCESS
        assert graph.engine.counters.shifts >= 2


def test_context_full_without_shifting(tiny_model_path):
    with Backend(NO_DEADLINE) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 1},
                                               "memory": {"context_shifting": False}})
        with graph.session() as s:
            c = s.complete("Hello", **GREEDY, max_tokens=150, ignore_eos=True)
        assert c.finish_reason == FinishReason.LENGTH and c.code == ErrorCode.CONTEXT_FULL
        # the KV holds 64 tokens; the last sampled token needs no cell
        assert c.prompt_tokens + len(c.generated_tokens) == 64 + 1
        with graph.session() as s, pytest.raises(PromptTooLong):
            s.complete(" ".join(["word"] * 80), **GREEDY)


def test_max_tokens(graph):
    assert len(complete(graph, "Hi", max_tokens=3, ignore_eos=True).generated_tokens) == 3
    zero = complete(graph, "Hi", max_tokens=0)
    assert zero.generated_tokens == () and zero.text == ""


def test_stop_string_cuts_output(graph):
    full = complete(graph, "Once upon a time", max_tokens=40, ignore_eos=True).text
    assert len(full) > 12
    stop = full[8:11]
    cut = complete(graph, "Once upon a time", max_tokens=40, ignore_eos=True, stop=[stop])
    assert cut.text == full[:full.index(stop)]
    assert cut.stopped_by == stop and cut.finish_reason == FinishReason.STOP


def test_stream_pieces_join_to_text_and_never_show_stop(graph):
    full = complete(graph, "Once upon a time", max_tokens=40, ignore_eos=True).text
    stop = full[10:14]
    with graph.session() as s:
        stream = s.complete_stream("Once upon a time", **GREEDY, max_tokens=40,
                                   ignore_eos=True, stop=[stop])
        pieces = list(stream)
        result = stream.result()
    assert "".join(pieces) == result.text == full[:full.index(stop)]
    assert all(stop not in p for p in pieces)


def test_logit_bias_forces_a_token(graph):
    token = graph.model.tokenize("zebra", add_special=False, parse_special=False)[0]
    c = complete(graph, "Hello", max_tokens=5, logit_bias=[[token, 100.0]])
    assert set(c.generated_tokens) == {token}


def test_eos_bias_ends_at_once(graph):
    eos = graph.model.eos_token
    c = complete(graph, "Hello", max_tokens=20, logit_bias=[[eos, 100.0]])
    assert c.generated_tokens == (eos,) and c.finish_reason == FinishReason.STOP
    assert c.text == ""


def test_penalties_change_greedy_output(graph):
    plain = complete(graph, "a a a a", max_tokens=30, ignore_eos=True).generated_tokens
    penalized = complete(graph, "a a a a", max_tokens=30, ignore_eos=True, repeat_penalty=1.8,
                         frequency_penalty=1.0, penalty_last_n=64).generated_tokens
    assert plain != penalized
    assert len(set(penalized)) >= len(set(plain))


def test_seed_reproduces_sampling(graph):
    kw = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "max_tokens": 20,
          "ignore_eos": True}
    with graph.session() as s:
        a = s.complete("Seeded", seed=1234, **kw).generated_tokens
    with graph.session() as s:
        b = s.complete("Seeded", seed=1234, **kw).generated_tokens
    with graph.session() as s:
        c = s.complete("Seeded", seed=99, **kw).generated_tokens
    assert a == b and a != c


def test_grammar_constrains_output(graph):
    grammar = 'root ::= ("yes" | "no") " " [0-9] [0-9]'
    c = complete(graph, "Answer:", max_tokens=20, grammar=grammar)
    import re
    assert re.fullmatch(r"(yes|no) [0-9][0-9]", c.text), c.text


def test_json_schema_output_parses(graph):
    import json
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    c = complete(graph, "JSON:", max_tokens=40, json_schema=json.dumps(schema))
    assert isinstance(json.loads(c.text)["ok"], bool)


def test_invalid_grammar_is_invalid_argument_at_the_call(graph):
    with graph.session() as s:
        with pytest.raises(InvalidArgument):
            s.complete("x", grammar="root ::= (")
        assert s.complete("x", **GREEDY, max_tokens=2).code == ErrorCode.SUCCESS


def test_n_probs_reported(graph):
    c = complete(graph, "Hello", max_tokens=3, n_probs=4, ignore_eos=True)
    assert len(c.probs) == 3 and all(len(row) == 4 for row in c.probs)
    for token, row in zip(c.generated_tokens, c.probs):
        assert row[0][0] == token  # greedy picks the most probable
        assert 0 < row[0][1] <= 1


def test_overrides_do_not_leak(graph):
    with graph.session() as s:
        s.complete("x", **GREEDY, max_tokens=2, stop=["a"])
        assert s.context_params == graph.defaults


def test_close_cancels_a_running_generation(graph):
    s = graph.session()
    stream = s.complete_stream("Hello", **GREEDY, max_tokens=100000, ignore_eos=True)
    stream.get(timeout=30)  # it is running
    s.close()
    result = stream.result(timeout=30)
    assert result.finish_reason == FinishReason.CANCELLED
