"""model.deterministic: a session's logits (and so its tokens, greedy or seeded) are bit-identical
to the same requests run alone, whatever else runs: every decode has one row per KV slot (the
slots not decoding carry a dummy token, removed after), a prompt is prefilled alone in chunks cut
at n_batch from where its prefill starts, and each sequence has its own KV stream (issue 19).

Measured first (tests below and bench/deterministic.py): without this, the same sequence decoded in
a 1-row batch and in an 8-row batch differs at every step on the F32 model (llama.cpp picks
kernels by batch size); with the shape held fixed, it does not, whoever fills the other rows.
Sequence moves (compaction) are off in this mode; offloading a session to RAM and restoring it
(bit-exact state) is covered here."""
from __future__ import annotations

import random

import numpy as np
import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend.llm.sampler import Sampler
from wasi_nn_backend.testing.tiny_model import write_tiny_llama

MINE = 4242          # the seed that marks our request's sampler
ENGINE: list = []    # the engine of the graph running now (run())
BESIDE: list = []    # at each of our picks: how many requests the engine was running
PROMPT = "The quick brown fox jumps over the lazy dog and"


@pytest.fixture(scope="module")
def q8_model(tmp_path_factory):
    return str(write_tiny_llama(tmp_path_factory.mktemp("q8") / "tiny-q8.gguf", quant="q8_0",
                                n_embd=256, n_ff=512, n_layer=4, n_head=8, n_head_kv=4))


@pytest.fixture
def logits_seen(monkeypatch):
    """Every logits row our request's sampler (seed MINE) sampled from, in order."""
    rows: list[np.ndarray] = []
    init, sample, greedy_from = Sampler.__init__, Sampler.sample, Sampler.greedy_from

    def tagged_init(self, model, params, **kwargs):
        init(self, model, params, **kwargs)
        self.mine = params.seed == MINE

    def record(row):
        rows.append(row.copy())
        BESIDE.append(len(ENGINE[-1].scheduler.running) if ENGINE else 0)

    def recording_sample(self, context, index):   # one sampler's pick
        if getattr(self, "mine", False) and not self.fast_greedy:
            record(context.logits_view(index))
        return sample(self, context, index)

    def recording_greedy(self, logits, best):       # every fast-greedy pick (pick_tokens)
        if getattr(self, "mine", False):
            record(logits)
        return greedy_from(self, logits, best)
    monkeypatch.setattr(Sampler, "__init__", tagged_init)
    monkeypatch.setattr(Sampler, "sample", recording_sample)
    monkeypatch.setattr(Sampler, "greedy_from", recording_greedy)
    return rows


def run(path, rows, *, others, slots, turns=2, offload=False, seed_others=1, n_ctx=256,
        shared="", **ask):
    """Our session's turns (each waits for the last), while ``others`` other sessions start
    at seeded random moments with prompts and lengths of their own; (the logits rows we
    sampled from, our tokens, engine steps). ``offload``: fewer slots than sessions and RAM
    for their state, so idle sessions (ours between turns) are offloaded and restored.
    ``shared``: a text every prompt, ours and the others', starts with."""
    rows.clear()
    BESIDE.clear()
    config = {"model": {"n_ctx": n_ctx, "n_seq_max": slots, "n_batch": max(32, slots),
                        "deterministic": True},
              "backend": {"max_sessions": others + 2, "max_concurrent": others + 1},
              "memory": {"max_memory_mb": 64 if offload else 0}}
    rng = random.Random(seed_others)
    with Backend(config) as backend:
        graph = backend.load(path)
        ENGINE.append(graph.engine)
        mine = graph.session()
        sessions = [graph.session() for _ in range(others)]
        started: list = []
        tokens = []

        def start_one():
            session = sessions.pop()
            words = shared + " ".join(f"w{rng.randrange(99)}"
                             for _ in range(rng.randrange(3, min(40, n_ctx // 4))))
            started.append(session.complete_stream(
                words, temperature=rng.choice([0, 0.7]), seed=rng.randrange(1000),
                ignore_eos=True, max_tokens=rng.randrange(8, 48)))
        for turn in range(turns):
            for _ in range(len(sessions) // (turns - turn) // 2):   # some already decoding
                start_one()
                started[-1].get(timeout=60)
            stream = mine.complete_stream(f"{shared}{PROMPT} {turn}", seed=MINE, **ask)
            while True:   # and more, one at a time, between our pieces
                if sessions and rng.random() < 0.5:
                    start_one()
                try:
                    stream.get(timeout=60)
                except Exception:   # EndOfStream: our turn is over
                    break
            tokens.append(stream.result(timeout=60).generated_tokens)
        for stream in started:
            stream.result(timeout=120)
        counters = graph.engine.counters.snapshot()
        steps, offloads = counters["steps"], counters["offloads"]
        assert counters["moves"] == 0   # the mode keeps every sequence at its id (no compaction)
        # nor copies another session's prefix: a prompt prefills from its own cache or from 0
        assert counters["prefix_copies"] == 0
        ENGINE.clear()
    return list(rows), tokens, steps, offloads


def assert_same(alone, crowded):
    rows_alone, tokens_alone = alone[:2]
    rows_crowded, tokens_crowded = crowded[:2]
    assert tokens_crowded == tokens_alone
    assert len(rows_crowded) == len(rows_alone) > 0
    for step, (a, b) in enumerate(zip(rows_alone, rows_crowded)):
        assert np.array_equal(a, b), f"step {step}: max |diff| {np.abs(a - b).max()}"


@pytest.mark.parametrize("which", ["f32", "q8"])
@pytest.mark.parametrize("others, slots", [(7, 8), (63, 64)])
def test_logits_alone_equal_logits_among_others(tiny_model_path, q8_model, logits_seen, which,
                                                others, slots):
    path = tiny_model_path if which == "f32" else q8_model
    ask = {"temperature": 0, "ignore_eos": True, "max_tokens": 12}
    alone = run(path, logits_seen, others=0, slots=slots, **ask)
    crowded = run(path, logits_seen, others=others, slots=slots, **ask)
    assert max(BESIDE) >= min(others, 4) + 1   # ours decoded among others
    assert_same(alone, crowded)


def test_seeded_sampling_and_offload_keep_it(tiny_model_path, logits_seen):
    """Seeded sampling, and our session offloaded to RAM between its turns (fewer slots than
    sessions) and restored: the same logits and tokens as alone."""
    ask = {"temperature": 0.9, "top_k": 40, "ignore_eos": True, "max_tokens": 10}
    alone = run(tiny_model_path, logits_seen, others=0, slots=2, turns=3, **ask)
    crowded = run(tiny_model_path, logits_seen, others=9, slots=2, turns=3, offload=True,
                  **ask)
    assert crowded[3] > 0   # sessions were offloaded and restored (moves: none, run() checks)
    assert_same(alone, crowded)


def test_a_prefix_other_sessions_hold_is_not_copied(tiny_model_path, logits_seen):
    """Every prompt starts with the same long text: elsewhere a new session copies it from a
    session holding it (memory.enable_token_cache_reuse) and prefills only the rest, which
    cuts its prompt into other chunks than alone; in this mode it prefills its own."""
    ask = {"temperature": 0, "ignore_eos": True, "max_tokens": 8}
    shared = " ".join(f"s{i}" for i in range(24)) + " "
    alone = run(tiny_model_path, logits_seen, others=0, slots=8, shared=shared, **ask)
    crowded = run(tiny_model_path, logits_seen, others=7, slots=8, shared=shared, **ask)
    assert_same(alone, crowded)


def test_context_shifts_keep_it(tiny_model_path, logits_seen):
    """Our turn outgrows its 64-token context and shifts (its own length decides when): the
    same logits as alone."""
    ask = {"temperature": 0, "ignore_eos": True, "max_tokens": 90}
    alone = run(tiny_model_path, logits_seen, others=0, slots=8, turns=1, n_ctx=64, **ask)
    crowded = run(tiny_model_path, logits_seen, others=7, slots=8, turns=1, n_ctx=64, **ask)
    assert len(alone[1][0]) == 90   # more tokens than the context holds: it shifted
    assert max(BESIDE) >= 4
    assert_same(alone, crowded)


def test_without_the_fixed_shape_a_sequence_changes_with_its_batch(tiny_model_path):
    """What the mode prevents, measured on the raw bindings: the same sequence decoded in a
    1-row and in an 8-row batch gives different logits on the F32 model; with 8 rows every
    time (dummies in the rows of sequences that do not decode, removed after) it does not."""
    from wasi_nn_backend.llm.batch import Batch
    from wasi_nn_backend.llm.context import Context
    from wasi_nn_backend.llm.model import Model

    model = Model.load(tiny_model_path)

    def logits(mode: str) -> np.ndarray:
        with Context(model, n_ctx=128 * 8, n_batch=64, n_seq_max=8, n_threads=2,
                     kv_unified=False) as context:
            batch, rng = Batch(64), random.Random(5)
            for seq in range(8):
                batch.clear()
                batch.add_sequence([rng.randrange(5, model.n_vocab) for _ in range(6)], 0, seq)
                assert context.decode(batch) == 0
            rows, token = [], 5
            for step in range(8):
                batch.clear()
                for seq in range(8 if mode != "alone" else 1):
                    if seq == 0:
                        batch.add(token, 6 + step, 0, True)
                    elif mode == "dummies":
                        batch.add(0, 6, seq, True)
                    else:
                        batch.add(9 + step, 6 + step, seq, True)
                assert context.decode(batch) == 0
                if mode == "dummies":
                    for seq in range(1, 8):
                        context.seq_rm(seq, 6, -1)
                rows.append(context.logits_view(0).copy())
                token = int(rows[-1].argmax())
            return np.stack(rows)
    try:
        alone, full, dummies = logits("alone"), logits("full"), logits("dummies")
    finally:
        model.close()
    assert not np.array_equal(alone, full)      # the batch's shape changes the numbers
    assert np.array_equal(full, dummies)        # its content does not


def test_the_scheduler_plans_fixed_decodes_and_lone_prompt_chunks():
    from wasi_nn_backend.config import BackendSettings, MemoryConfig, RequestParams
    from wasi_nn_backend.core.request import Request, RequestState, SequenceState
    from wasi_nn_backend.core.scheduler import Scheduler
    from wasi_nn_backend.core.slots import SlotPool
    from wasi_nn_backend.engine.clock import FakeClock

    scheduler = Scheduler(n_batch=8, n_ctx=64, pool=SlotPool(4),
                          settings=BackendSettings(), memory=MemoryConfig(), can_shift=True,
                          clock=FakeClock(), deterministic=True)
    for i in range(3):
        scheduler.submit(Request(session=SequenceState(i), prompt_tokens=list(range(1, 20)),
                                 params=RequestParams()))
    chunks, decodes = [], 0
    for _ in range(30):   # three prompts of 19 tokens: chunks of 8, 8, 3 each, one per step
        plan = scheduler.plan()
        if plan.decode:   # taking turns with the prefills: every generating request, fixed
            assert not plan.prefill and plan.fixed_rows == 4
            decodes += 1
            for request in plan.decode:
                request.session.kv_tokens.append(request.pending_token)
            continue
        assert len(plan.prefill) == 1 and plan.fixed_rows == 0
        request, count = plan.prefill[0]
        chunks.append((request.session.session_id, request.n_past, count))
        request.n_past += count
        request.session.kv_tokens.extend(request.prompt_tokens[:count])
        if request.n_past == len(request.prompt_tokens):
            request.state = RequestState.GENERATING
            request.pending_token = 1
        if len(chunks) == 9:
            break
    assert sorted(chunks) == [(s, start, n) for s in range(3) for start, n in
                              ((0, 8), (8, 8), (16, 3))]
    assert decodes >= 2
    plan = scheduler.plan()
    assert len(plan.decode) == 3 and plan.fixed_rows == 4 and not plan.prefill
