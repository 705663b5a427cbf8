"""enable_token_cache_reuse: a new session whose prompt starts like a resident one's (a shared
system prompt) copies that prefix (seq_cp) instead of prefilling it."""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend

SYSTEM = ("You are a helpful assistant. Answer briefly and politely. The cat sat on the mat "
          "and the dog ran in the park while the sun was shining over the hills. ")
ASK = {"temperature": 0, "ignore_eos": True, "max_tokens": 10}


@pytest.mark.parametrize("unified", [False, True])
def test_shared_prefix_is_copied_not_prefilled(tiny_model_path, unified):
    config = {"model": {"n_ctx": 256, "n_seq_max": 4, "kv_unified": unified}}
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path)
        first = graph.session().complete(SYSTEM + "Question one?", **ASK)
        second_session = graph.session()
        second = second_session.complete(SYSTEM + "Question two?", **ASK)
        counters = graph.engine.counters
        assert counters.prefix_copies == 1
        assert second.reused_tokens >= 30 and second.reused_tokens == counters.copied_tokens
        assert second.prefilled_tokens == second.prompt_tokens - second.reused_tokens
        assert first.reused_tokens == 0
    # the copy gives what prefilling the same tokens would have given
    config["memory"] = {"enable_token_cache_reuse": False}
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path)
        s = graph.session()
        s.complete(SYSTEM + "Question one?", **ASK)   # the same prefix, in its own cache
        own = s.complete(SYSTEM + "Question two?", **ASK)
        assert graph.engine.counters.prefix_copies == 0
    assert second.generated_tokens == own.generated_tokens


def test_short_common_prefix_is_not_copied(tiny_model_path):
    with Backend({"model": {"n_ctx": 128, "n_seq_max": 2}}) as backend:
        graph = backend.load(tiny_model_path)
        graph.session().complete("Hello there my friend", **ASK)
        graph.session().complete("Hello there you", **ASK)
        assert graph.engine.counters.prefix_copies == 0
