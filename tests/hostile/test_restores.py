"""Swapped sessions come back from host RAM, not from a prefill, when one step both swaps them
out and wants them again.

Under a soak "KV state could not be restored; prefilling it again" was logged hundreds of times:
when one step admitted a new session by swapping out an idle one whose own request was waiting
too, the same step restored that session into another slot before its saved bytes had reached
the swap store. Outputs stayed right (the history was prefilled again), at the cost of a
prefill and of a needless swap-out of a third session.
"""
from __future__ import annotations

import logging

from holding import hold_engine
from wasi_nn_backend import Backend

GREEDY = {"temperature": 0, "ignore_eos": True, "max_tokens": 6}
PROMPTS = {"v": "The cat sat on the mat and", "w": "Once upon a time the dog",
           "x": "Something else entirely"}
MORE = " then the little sun came up and"
RESTORE_LOG = "could not be restored"


def config(slots):
    return {"model": {"n_ctx": 128, "n_seq_max": slots}, "memory": {"max_memory_mb": 64},
            "backend": {"max_concurrent": 4}, "logging": {"level": "warning"}}


def alone(path):
    """What each request of run() gives when its conversation runs alone: x's first reply,
    v's and w's second."""
    with Backend(config(1)) as backend:
        graph = backend.load(path)
        replies = {}
        for name, prompt in PROMPTS.items():
            with graph.session() as session:
                reply = session.complete(prompt, **GREEDY)
                if name != "x":
                    reply = session.complete(prompt + reply.text + MORE, **GREEDY)
                replies[name] = reply.generated_tokens
        return replies


def run(path, waiting):
    """Sessions v and w each hold a slot (v used longest ago); x is new. Then x and the
    sessions in ``waiting`` send a request in the same step. Returns the engine counters,
    and the completions of the requests sent in that step."""
    with Backend(config(2)) as backend:
        graph = backend.load(path)
        sessions = {name: graph.session() for name in PROMPTS}
        firsts = {name: sessions[name].complete(PROMPTS[name], **GREEDY) for name in "vw"}
        release = hold_engine(graph.engine)
        try:
            streams = {"x": sessions["x"].complete_stream(PROMPTS["x"], **GREEDY)}
            for name in waiting:
                streams[name] = sessions[name].complete_stream(
                    PROMPTS[name] + firsts[name].text + MORE, **GREEDY)
        finally:
            release.set()
        results = {name: stream.result(30) for name, stream in streams.items()}
        counters = graph.engine.counters.snapshot()
        assert backend.stats().restore_failures == counters["restore_failures"]
        return counters, results


def test_a_session_swapped_out_and_wanted_in_one_step_is_restored(tiny_model_path, caplog):
    expected = alone(tiny_model_path)
    with caplog.at_level(logging.WARNING, logger="wasi_nn_backend.engine"):
        # Both slots' sessions are wanted again: x takes v's slot (least recently used), and
        # v, admitted in the same step, takes w's.
        counters, results = run(tiny_model_path, "vw")
    assert RESTORE_LOG not in caplog.text
    assert counters["restore_failures"] == 0 and counters["restores"] >= 1
    v = results["v"]
    assert v.reused_tokens > len(PROMPTS["v"]) // 2, "v was prefilled again, not restored"
    for name, completion in results.items():
        assert completion.generated_tokens == expected[name], name


def test_a_slot_goes_to_a_session_with_nothing_waiting_first(tiny_model_path, caplog):
    expected = alone(tiny_model_path)
    with caplog.at_level(logging.WARNING, logger="wasi_nn_backend.engine"):
        # v (least recently used) has a request waiting; w has none: x takes w's slot, v
        # keeps its own. One swap-out, nothing to restore.
        counters, results = run(tiny_model_path, "v")
    assert RESTORE_LOG not in caplog.text
    assert counters["offloads"] == 1 and counters["restores"] == 0
    for name, completion in results.items():
        assert completion.generated_tokens == expected[name], name
    assert results["v"].prefilled_tokens < results["v"].prompt_tokens // 2


def test_a_swapped_session_that_copies_a_longer_prefix_is_not_restored_first(
        tiny_model_path, caplog):
    """v was swapped out holding a short text; its next prompt shares a long prefix with what
    d holds: the prefix is copied from d (plan: swap-in, then prefix copy). The swap-in was
    checked against the copy's tokens, failed, and made the copy be skipped: a whole prefill."""
    shared = "Once upon a time the little dog ran to see the sun when it was up and then"
    prompt = shared + " the cat sat on the mat"
    with Backend(config(1)) as backend:
        graph = backend.load(tiny_model_path)
        with graph.session() as session:
            expected = session.complete(prompt, **GREEDY).generated_tokens
    with caplog.at_level(logging.WARNING, logger="wasi_nn_backend.engine"), \
            Backend(config(2)) as backend:
        graph = backend.load(tiny_model_path)
        v, e, d = graph.session(), graph.session(), graph.session()
        v.complete("Hello", **GREEDY)
        e.complete("Good night", **GREEDY)
        d.complete(shared, **GREEDY)              # takes v's slot: v is swapped out
        reply = v.complete(prompt, **GREEDY)      # takes e's slot; copies d's prefix
        counters = graph.engine.counters.snapshot()
        assert graph.engine.offload.bytes_used > 0   # e's bytes only
        assert len(graph.engine.offload) == 1
    assert RESTORE_LOG not in caplog.text
    assert counters["prefix_copies"] == 1 and counters["restore_failures"] == 0
    assert reply.generated_tokens == expected
    assert reply.prefilled_tokens < reply.prompt_tokens // 2
