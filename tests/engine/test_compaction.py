"""One KV stream per session: when a session in the middle of the busy ones finishes, the
engine moves sequences (bit-exact, through their state bytes) so that the busy sequence ids
stay consecutive, and every session still gets exactly what it gets alone."""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend

GREEDY = {"temperature": 0, "ignore_eos": True}
LENGTHS = (3, 40, 6, 40, 9, 40)  # the short ones finish first and leave gaps


def prompt(i: int) -> str:
    return f"Story {i}: the little cat and the dog ran to see the sun"


@pytest.fixture(scope="module")
def alone(tiny_model_path):
    """What each prompt gives in a session of its own, and its follow-up turn."""
    results = {}
    with Backend({"logging": {"level": "error"}}) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 256, "n_seq_max": 8}})
        for i, length in enumerate(LENGTHS):
            first = graph.session().complete(prompt(i), max_tokens=length, **GREEDY)
            follow = prompt(i) + first.text + " and then"
            results[i] = (first.generated_tokens,
                          graph.session().complete(follow, max_tokens=8, **GREEDY).generated_tokens)
    return results


def test_busy_ids_are_compacted_and_every_session_matches_alone(tiny_model_path, alone):
    with Backend({"logging": {"level": "error"}}) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 256, "n_seq_max": 8}})
        sessions = [graph.session() for _ in LENGTHS]
        streams = [s.complete_stream(prompt(i), max_tokens=length, **GREEDY)
                   for i, (s, length) in enumerate(zip(sessions, LENGTHS))]
        firsts = [stream.result() for stream in streams]
        assert graph.engine.counters.moves >= 2
        for i, done in enumerate(firsts):
            assert done.generated_tokens == alone[i][0]
        # The moved sequences still hold their tokens: the next turn reuses them all.
        for i, (session, done) in enumerate(zip(sessions, firsts)):
            follow = session.complete(prompt(i) + done.text + " and then", max_tokens=8, **GREEDY)
            assert follow.generated_tokens == alone[i][1]
            assert follow.reused_tokens >= done.prompt_tokens


def test_unified_kv_and_deterministic_mode_never_move(tiny_model_path):
    for model in ({"kv_unified": True}, {"deterministic": True}):
        with Backend({"logging": {"level": "error"}}) as backend:
            graph = backend.load(tiny_model_path, {"model": {"n_ctx": 256, **model}})
            streams = [graph.session().complete_stream(prompt(i), max_tokens=n, **GREEDY)
                       for i, n in enumerate(LENGTHS)]
            for stream in streams:
                stream.result()
            assert graph.engine.counters.moves == 0
