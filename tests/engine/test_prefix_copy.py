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


def test_a_copy_must_save_a_real_prefill():
    """A donor sharing a couple of tokens more than the session holds itself is not copied
    from: a copy moves a whole KV stream (here it saved 2 tokens of prefill, measured in the
    HTTP bench's second wave); sharing MIN_PREFIX_COPY more is."""
    from wasi_nn_backend.config import MemoryConfig
    from wasi_nn_backend.core.kv_policy import MIN_PREFIX_COPY, plan_prompt
    from wasi_nn_backend.core.plan import CopyPrefix
    from wasi_nn_backend.core.request import SequenceState
    prompt = list(range(100, 160))
    own = SequenceState(session_id=1, seq_id=0, kv_tokens=prompt[:23] + [7, 7])
    for extra, copies in ((2, False), (MIN_PREFIX_COPY, True)):
        donor = SequenceState(session_id=2, seq_id=1, kv_tokens=prompt[:23 + extra] + [9])
        _, reuse, actions = plan_prompt(SequenceState(**vars(own)), prompt, n_ctx=256,
                                        memory=MemoryConfig(), can_shift=True,
                                        truncate_ok=False, donors=[donor])
        assert any(isinstance(a, CopyPrefix) for a in actions) is copies
        assert reuse == 23 + (extra if copies else 0)


@pytest.mark.parametrize("sessions", [2, 6])
def test_sessions_opened_at_once_prefill_a_shared_prefix_once(tiny_model_path, sessions):
    """New sessions whose prompts start with the same system prompt, all sent in one step
    with no cache holding it: one prefills it, the others wait for that and copy it (before:
    each prefilled it beside the others). Their outputs are those of sessions run alone."""
    from holding import hold_engine
    questions = [f"Question number {i} about the sea?" for i in range(sessions)]
    config = {"model": {"n_ctx": 256, "n_seq_max": sessions}}
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path)
        alone = []
        for question in questions:
            with graph.session() as session:
                alone.append(session.complete(SYSTEM + question, **ASK).generated_tokens)
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path)
        opened = [graph.session() for _ in questions]
        release = hold_engine(graph.engine)
        try:
            streams = [s.complete_stream(SYSTEM + q, **ASK) for s, q in zip(opened, questions)]
        finally:
            release.set()
        done = [stream.result(timeout=60) for stream in streams]
        counters = graph.engine.counters.snapshot()
    assert done[0].reused_tokens == 0   # the first prefilled all of it
    assert counters["prefix_copies"] == sessions - 1
    for completion in done[1:]:
        assert completion.reused_tokens >= 30   # the system prompt, copied
        assert completion.prefilled_tokens == completion.prompt_tokens - completion.reused_tokens
    assert counters["prefill_tokens"] == sum(c.prefilled_tokens for c in done)
    assert [c.generated_tokens for c in done] == alone


def test_a_request_waiting_for_a_prefix_keeps_its_place(tiny_model_path):
    """Two places: A prefills the system prompt, B (same system prompt) waits for it, C
    (unrelated) came after B. C must not take the place B waits for: B starts as soon as
    A's prefill is done and copies it; C starts when a place frees."""
    from holding import hold_engine
    config = {"model": {"n_ctx": 256, "n_seq_max": 2}, "backend": {"max_concurrent": 2}}
    with Backend(config) as backend:
        graph = backend.load(tiny_model_path)
        a, b, c = graph.session(), graph.session(), graph.session()
        release = hold_engine(graph.engine)
        try:
            streams = [a.complete_stream(SYSTEM + "Question A?", **ASK),
                       b.complete_stream(SYSTEM + "Question B?", **ASK),
                       c.complete_stream("Something else entirely", **ASK)]
        finally:
            release.set()
        done_a, done_b, done_c = (stream.result(timeout=60) for stream in streams)
    assert done_b.reused_tokens >= 30   # copied from A

    def first_token_at(done):   # on the engine's clock
        return done.finished_at - done.seconds + done.first_token_seconds
    # B generated beside A; C only once one of them had finished
    assert first_token_at(done_b) < done_a.finished_at < first_token_at(done_c)
