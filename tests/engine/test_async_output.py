"""Asynchronous output (model.async_output): a step's text is emitted after the next
llama_decode is launched. Every request ends as it ends without it (text, pieces, finish
reason, tokens, stop string, probabilities), eight sessions at once; a stop string costs at
most one token decoded for nothing, never a wrong one; "auto" is off on this CPU."""
from __future__ import annotations

import pytest
from sessions_at_once import NO_DEADLINE, run_at_once

from wasi_nn_backend import Backend, FinishReason
from wasi_nn_backend.config import parse_config
from wasi_nn_backend.engine.contexts import defers_output
from wasi_nn_backend.errors import ErrorCode


PROMPTS = ["The quick brown fox", "Once upon a time", "In the beginning", "Hello world",
           "A B C D", "1 2 3 4 5", "Numbers and words", "Zebra crossing"]


def load(backend, path, mode, deterministic=False):
    return backend.load(path, {"model": {"n_ctx": 256, "n_seq_max": 8, "n_batch": 64,
                                         "async_output": mode,
                                         "deterministic": deterministic}})


def asks(full: list[str]) -> list[dict]:
    """For each prompt: a stop string from the middle of its full greedy text, a token
    limit, sampled with n_probs, a grammar, or several stop strings."""
    shapes = []
    for i, text in enumerate(full):
        kind = i % 4
        if kind == 0 and len(text) > 14:
            shapes.append({"stop": [text[8:12]]})
        elif kind == 1:
            shapes.append({"max_tokens": 7, "stop": ["zzzz"]})
        elif kind == 2:
            shapes.append({"temperature": 0.9, "seed": 7, "n_probs": 3, "stop": [text[3:5]]})
        else:
            shapes.append({"grammar": 'root ::= [a-z ]+ "."', "stop": ["e"]})
    return shapes


def run_all(graph, shapes):
    """Every prompt on its own session, all at once, streamed: (pieces, completion) each."""
    asks = [{"temperature": 0, "max_tokens": 40, "ignore_eos": True, **shape} for shape in shapes]
    return run_at_once(graph, PROMPTS, asks, stream=True)


def test_every_request_ends_as_without_it(tiny_model_path):
    with Backend(NO_DEADLINE) as backend:
        # deterministic: logits bit for bit whatever runs beside (n_probs compares exactly)
        plain = load(backend, tiny_model_path, "off", deterministic=True)
        assert not plain.engine._defer
        full = []
        for prompt in PROMPTS:
            with plain.session() as session:
                full.append(session.complete(prompt, temperature=0, max_tokens=40,
                                             ignore_eos=True).text)
        shapes = asks(full)
        expected = run_all(plain, shapes)
        plain.close()
        deferred = load(backend, tiny_model_path, "on", deterministic=True)
        assert deferred.engine._defer
        got = run_all(deferred, shapes)
    stopped = 0
    for (pieces, done), (want_pieces, want) in zip(got, expected):
        assert "".join(pieces) == done.text == "".join(want_pieces) == want.text
        for field in ("finish_reason", "code", "generated_tokens", "final_tokens",
                      "stopped_by", "probs", "prompt_tokens"):
            assert getattr(done, field) == getattr(want, field), field
        stopped += done.stopped_by is not None
    assert stopped >= 3   # the stop strings did stop requests


def test_a_stop_string_costs_at_most_one_token_decoded_for_nothing(tiny_model_path):
    with Backend(NO_DEADLINE) as backend:
        for mode, wasted in (("off", 0), ("on", 1)):
            graph = load(backend, tiny_model_path, mode)
            with graph.session() as session:
                full = session.complete("Once upon a time", temperature=0, max_tokens=40,
                                        ignore_eos=True)
            stop = full.text[10:14]
            with graph.session() as session:
                before = graph.engine.counters.decode_tokens
                done = session.complete("Once upon a time", temperature=0, max_tokens=40,
                                        ignore_eos=True, stop=[stop])
                decoded = graph.engine.counters.decode_tokens - before
                assert done.stopped_by == stop and done.finish_reason == FinishReason.STOP
                # every generated token but the last was decoded; deferred, the last too
                assert decoded == len(done.generated_tokens) - 1 + wasted
                # the session goes on from its tokens either way
                again = session.complete(" and", temperature=0, max_tokens=3)
                assert again.code == ErrorCode.SUCCESS and len(again.generated_tokens) == 3
            graph.close()


def test_cancel_and_close_keep_the_text_sampled_before(tiny_model_path):
    with Backend(NO_DEADLINE) as backend:
        graph = load(backend, tiny_model_path, "on")
        session = graph.session()
        stream = session.complete_stream("Hello", temperature=0, max_tokens=100000,
                                         ignore_eos=True)
        first = stream.get(timeout=30)
        session.close()
        done = stream.result(timeout=30)
        assert done.finish_reason == FinishReason.CANCELLED
        assert done.text.startswith(first)
        assert len(done.text) >= len(first)
        # every sampled token's text is in the completion (none left unsent)
        assert done.text == graph.model.detokenize(done.generated_tokens)


@pytest.mark.parametrize("mode, gpu_layers, on", [("auto", 0, False), ("auto", 99, None),
                                                   ("on", 0, True), ("off", 99, False)])
def test_auto_is_on_only_with_gpu_layers_on_a_gpu_build(mode, gpu_layers, on):
    from wasi_nn_backend.llm.lib import supports_gpu_offload
    config, warnings = parse_config({"model": {"async_output": mode,
                                               "n_gpu_layers": gpu_layers}})
    assert warnings == []
    settings = config.model
    assert defers_output(settings) is (supports_gpu_offload() if on is None else on)
