"""Deterministic mode (issue 19): what it costs and what it guarantees, on this CPU.

Cost: aggregate tokens/s of N sessions at once (each a ~20-token prompt and 48 greedy tokens)
on the benchmark model (bench/make_model.py: 250M, Q8_0), default vs ``deterministic: true``,
8 and 64 sessions, each contender in its own process, alternating, best of --repeat.

Guarantee: one session's logits, step by step, alone and among 7 others that start at seeded
random moments (tiny F32 and Q8_0 models): how many steps are bit-identical, default vs
deterministic (tests/engine/test_deterministic.py asserts the deterministic column).

Run: .venv/bin/python bench/deterministic.py [--repeat 2] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import common
from common import THREADS
from make_model import model_path

TARGET_64 = 0.70   # deterministic >= 70% of the default's tokens/s at 64 sessions
WORDS = "once upon a time the little cat and the dog ran to see the sun and sat".split()
MINE = 4242


def throughput(path: str, sessions: int, deterministic: bool) -> float:
    from wasi_nn_backend import Backend
    config = {"backend": {"max_sessions": sessions + 1, "max_concurrent": sessions},
              "model": {"n_ctx": 128, "n_seq_max": sessions, "n_batch": max(64, sessions),
                        "threads": THREADS, "flash_attn": "on",
                        "deterministic": deterministic}}
    with Backend(config) as backend:
        graph = backend.load(path)
        opened = [graph.session() for _ in range(sessions)]
        began = time.perf_counter()
        streams = [s.complete_stream(f"{i} " + " ".join(WORDS), temperature=0, max_tokens=48,
                                     ignore_eos=True) for i, s in enumerate(opened)]
        total = sum(len(stream.result().generated_tokens) for stream in streams)
        return total / (time.perf_counter() - began)


def logits_steps(path: str, deterministic: bool) -> tuple[int, int]:
    """(steps whose logits are bit-identical alone and among 7 others, steps)."""
    import numpy as np

    from wasi_nn_backend import Backend
    from wasi_nn_backend.llm.sampler import Sampler
    rows: list = []
    init, sample, greedy_from = Sampler.__init__, Sampler.sample, Sampler.greedy_from

    def tagged_init(self, model, params, **kwargs):
        init(self, model, params, **kwargs)
        self.mine = params.seed == MINE

    def recording_sample(self, context, index):   # one sampler's pick
        if getattr(self, "mine", False) and not self.fast_greedy:
            rows.append(context.logits_view(index).copy())
        return sample(self, context, index)

    def recording_greedy(self, logits, best):       # every fast-greedy pick (pick_tokens)
        if getattr(self, "mine", False):
            rows.append(logits.copy())
        return greedy_from(self, logits, best)
    Sampler.__init__, Sampler.sample = tagged_init, recording_sample
    Sampler.greedy_from = recording_greedy

    def run(others: int) -> list:
        rows.clear()
        rng = random.Random(7)
        config = {"model": {"n_ctx": 256, "n_seq_max": 8, "n_batch": 32,
                            "deterministic": deterministic}}
        with Backend(config) as backend:
            graph = backend.load(path)
            started = []

            def start_one() -> None:
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 40)))
                started.append(graph.session().complete_stream(
                    words, temperature=0, max_tokens=rng.randrange(8, 48), ignore_eos=True))
            for _ in range(others // 2):   # some decoding already when ours starts
                start_one()
                started[-1].get(timeout=60)
            mine = graph.session().complete_stream(" ".join(WORDS), seed=MINE, temperature=0,
                                                   max_tokens=24, ignore_eos=True)
            for _ in range(others - others // 2):
                mine.get(timeout=60)   # one of our pieces, then another session starts
                start_one()
            mine.result(timeout=120)
            for stream in started:
                stream.result(timeout=120)
        return list(rows)
    alone, crowded = run(0), run(7)
    assert len(alone) == len(crowded) == 24, (len(alone), len(crowded))
    same = sum(np.array_equal(a, b) for a, b in zip(alone, crowded))
    return same, len(alone)


def worker(args: list[str]) -> object:
    kind, path, *rest = args
    if kind == "throughput":
        return throughput(path, int(rest[0]), rest[1] == "1")
    return logits_steps(path, rest[0] == "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    path = model_path()
    speeds: dict[tuple[int, bool], float] = {}
    for _ in range(args.repeat):
        for sessions in (8, 64):
            for deterministic in (False, True):
                speed = common.worker("deterministic.py", "throughput", path, str(sessions),
                                      "1" if deterministic else "0")
                key = (sessions, deterministic)
                speeds[key] = max(speeds.get(key, 0.0), speed)
                print(f"{sessions} sessions, deterministic={deterministic}: {speed:.1f} tok/s",
                      flush=True)
    lines = [f"## Deterministic mode (`bench/deterministic.py`)\n\n{common.machine()}; the "
             "benchmark model (250M, Q8_0); N sessions at once, each a ~20-token prompt and 48 "
             f"greedy tokens; aggregate tokens/s, best of {args.repeat} alternating runs, each "
             "in its own process.\n",
             "| sessions | default tokens/s | deterministic tokens/s | deterministic / default |",
             "|---|---|---|---|"]
    for sessions in (8, 64):
        default, fixed = speeds[(sessions, False)], speeds[(sessions, True)]
        lines.append(f"| {sessions} | {default:.1f} | {fixed:.1f} | {fixed / default:.0%} |")
    share = speeds[(64, True)] / speeds[(64, False)]
    lines += ["", f"- 64 sessions: deterministic is {share:.0%} of the default (target >= "
              f"{TARGET_64:.0%}): {common.verdict(share >= TARGET_64)}", "",
              "One session's logits, step by step, alone and among 7 others (3 decoding when it "
              "starts, 4 starting between its tokens; tiny models, this CPU): steps "
              "bit-identical.", "",
              "| model | default | deterministic |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        from wasi_nn_backend.testing.tiny_model import write_tiny_llama
        for name, quant in (("tiny F32", None), ("tiny Q8_0", "q8_0")):
            tiny = str(write_tiny_llama(Path(folder) / f"{name[-3:]}.gguf", seed=0, quant=quant))
            cells = []
            for deterministic in (False, True):
                same, steps = common.worker("deterministic.py", "logits", tiny,
                                            "1" if deterministic else "0")
                cells.append(f"{same} of {steps}")
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "A GPU run of the same comparison needs a device; none was lent to issue 19's "
              "session."]
    common.publish("deterministic", "\n".join(lines) + "\n", write=not args.no_write)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
