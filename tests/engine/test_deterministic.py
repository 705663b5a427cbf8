"""model.deterministic: a session's output is bit-identical whatever else runs at the same time,
on a quantized (Q8_0) model too: one sequence per decode, one KV stream per sequence. (With one
shared KV stream and mixed batches the same model's greedy output changes: bench/deterministic.py
measures it.)"""
from __future__ import annotations

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend.testing.tiny_model import write_tiny_llama

ASK = {"temperature": 0, "ignore_eos": True, "max_tokens": 32}
PROMPT = "The quick brown fox jumps over the lazy dog and"


@pytest.fixture(scope="module")
def q8_model(tmp_path_factory):
    return str(write_tiny_llama(tmp_path_factory.mktemp("q8") / "tiny-q8.gguf", quant="q8_0",
                                n_embd=256, n_ff=512, n_layer=4, n_head=8, n_head_kv=4))


def run(path, *, busy, **model):
    """Our greedy tokens, while ``busy`` other sessions prefill long prompts and generate."""
    config = {"model": {"n_ctx": 1024, "n_seq_max": 8, "n_batch": 128, **model}}
    with Backend(config) as backend:
        graph = backend.load(path)
        mine = graph.session().complete_stream(PROMPT, **ASK)
        others = [graph.session().complete_stream(
            " ".join(f"word{i}{j}" for j in range(120)), **{**ASK, "max_tokens": 64})
            for i in range(busy)]
        tokens = mine.result(timeout=60).generated_tokens
        steps = graph.engine.counters.steps
        for stream in others:
            stream.cancel()
        return tokens, steps


def test_deterministic_q8_alone_equals_beside_seven_busy_sessions(q8_model):
    alone, _ = run(q8_model, busy=0, deterministic=True, kv_unified=True)
    crowded, steps = run(q8_model, busy=7, deterministic=True, kv_unified=True)
    assert crowded == alone
    assert steps > 2 * len(alone)  # the others really ran in between, one sequence per step


def test_default_split_streams_are_also_stable_on_q8(q8_model):
    alone, _ = run(q8_model, busy=0)
    crowded, _ = run(q8_model, busy=7)
    assert crowded == alone


def test_deterministic_scheduler_plans_one_sequence_per_step():
    from wasi_nn_backend.config import BackendSettings, MemoryConfig, RequestParams
    from wasi_nn_backend.engine.clock import FakeClock
    from wasi_nn_backend.core.slots import SlotPool
    from wasi_nn_backend.core.scheduler import Scheduler
    from wasi_nn_backend.core.request import Request, SequenceState

    scheduler = Scheduler(n_batch=8, n_ctx=64, pool=SlotPool(4),
                          settings=BackendSettings(), memory=MemoryConfig(), can_shift=True,
                          clock=FakeClock(), deterministic=True)
    for i in range(3):
        scheduler.submit(Request(session=SequenceState(i), prompt_tokens=[1, 2, 3],
                                 params=RequestParams()))
    seen = []
    for _ in range(3):
        plan = scheduler.plan()
        assert len(plan.decode) + len(plan.prefill) == 1
        request, count = plan.prefill[0]
        request.n_past += count
        seen.append(request.session.session_id)
    assert sorted(seen) == [0, 1, 2]
