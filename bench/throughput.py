"""Throughput under concurrency: N sessions (1, 2, 4, 8, 16) at once, each a short prompt and
64..128 new greedy tokens, through the public API (Backend -> Graph -> Session.complete_stream,
one thread per session reading its stream), in the default configuration (one KV stream per
session: a session's output never depends on its neighbours) and with ``kv_unified: true``
(one shared KV stream: every step is one llama.cpp ubatch). Beside it, in the same run,
llama-cpp-python's
high-level ``Llama`` on the same model and threads: the natural Python alternative, one
generation at a time behind a lock (each thread streams its completion when it gets the lock).

Reports aggregate decode tokens/s (all generated tokens / wall time from the first request to
the last token), time to first token (TTFT) p50/p95 and inter-token latency (ITL) p50/p95.
Writes its section of bench/RESULTS.md and bench/throughput.png.

Run: .venv/bin/python bench/throughput.py [--sessions 1,2,4,8,16] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass

import common
from common import THREADS, Timeline, percentile, run_threads
from make_model import model_path

from wasi_nn_backend import Backend

N_CTX = 512  # per session; prompts are ~20 tokens, replies <= 128
FLASH = "on"  # llama.cpp resolves our default "auto" to on for this CPU; Llama gets the same


@dataclass
class Job:
    prompt: str
    tokens: int


def jobs(n: int, name: str = "Story") -> list[Job]:
    rng = random.Random(n)
    return [Job(f"{name} {i}: once upon a time the little cat and the dog ran to see the sun "
                f"and {rng.choice(['sat', 'said', 'ran'])}", rng.randint(64, 128))
            for i in range(n)]


@dataclass
class Outcome:
    seconds: float
    timelines: list[Timeline]

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.timelines)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def ttft(self, q: float) -> float:
        return percentile([t.ttft for t in self.timelines], q) * 1000

    def itl(self, q: float) -> float:
        return percentile([g for t in self.timelines for g in t.gaps], q) * 1000


def run_ours(backend: Backend, path: str, work: list[Job]) -> Outcome:
    graph = backend.graphs[0]
    timelines = {id(job): Timeline() for job in work}
    ask = {"temperature": 0, "ignore_eos": True}

    def one(job: Job) -> None:
        line = timelines[id(job)]
        with graph.session() as session:
            line.sent = time.perf_counter()
            stream = session.complete_stream(job.prompt, max_tokens=job.tokens, **ask)
            for _ in stream:
                line.arrivals.append(time.perf_counter())
            line.tokens = len(stream.result().generated_tokens)
    seconds = run_threads(work, one)
    return Outcome(seconds, list(timelines.values()))


def run_llama(llm, work: list[Job]) -> Outcome:
    lock = threading.Lock()
    timelines = {id(job): Timeline() for job in work}

    def one(job: Job) -> None:
        line = timelines[id(job)]
        line.sent = time.perf_counter()
        with lock:
            finish = None
            for chunk in llm.create_completion(job.prompt, max_tokens=job.tokens,
                                               temperature=0.0, stream=True):
                line.arrivals.append(time.perf_counter())
                finish = chunk["choices"][0]["finish_reason"]
        # A chunk may carry several tokens (held-back UTF-8); "length" means all max_tokens.
        line.tokens = job.tokens if finish == "length" else len(line.arrivals)
    seconds = run_threads(work, one)
    return Outcome(seconds, list(timelines.values()))


CONTENDERS = {  # name: our model settings (None: Llama), label
    "ours": ({}, "wasi-nn-backend (default: one KV stream per session)"),
    "ours-unified": ({"kv_unified": True}, "wasi-nn-backend, kv_unified: true"),
    "llama": (None, "llama-cpp-python Llama (behind a lock)"),
}


def open_ours(path: str, n_seq: int, n_ctx: int = N_CTX, **model) -> Backend:
    backend = Backend({"backend": {"max_concurrent": n_seq, "max_sessions": 4 * n_seq},
                       "model": {"n_ctx": n_ctx, "n_seq_max": n_seq, "n_batch": 512,
                                 "threads": THREADS, "threads_batch": THREADS,
                                 "flash_attn": FLASH, **model},
                       "logging": {"level": "warning"}})
    backend.load(path)
    return backend


def open_llama(path: str, n_ctx: int = N_CTX):
    from llama_cpp import Llama
    return Llama(path, n_ctx=n_ctx, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                 flash_attn=FLASH == "on", verbose=False, seed=0)


def summary(outcome: Outcome) -> dict[str, float]:
    return {"tokens_per_s": outcome.tokens_per_s, "tokens": outcome.tokens,
            "ttft50": outcome.ttft(50), "ttft95": outcome.ttft(95),
            "itl50": outcome.itl(50), "itl95": outcome.itl(95)}


def work_in_this_process(who: str, n: int, slots: int) -> dict[str, float]:
    """One contender, one run of n sessions after a warm-up (``--worker``)."""
    path = model_path()
    model = CONTENDERS[who][0]
    if model is not None:
        with open_ours(path, slots, **model) as backend:
            run_ours(backend, path, jobs(1, "Warm-up"))  # another prompt: nothing to reuse
            return summary(run_ours(backend, path, jobs(n)))
    llm = open_llama(path)
    run_llama(llm, jobs(1, "Warm-up"))
    return summary(run_llama(llm, jobs(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,2,4,8,16")
    parser.add_argument("--repeat", type=int, default=3, help="runs per point; the best counts")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("WHO", "N", "SLOTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        who, n, slots = args.worker
        print(json.dumps(work_in_this_process(who, int(n), int(slots))))
        return
    counts = [int(n) for n in args.sessions.split(",")]
    model_path()  # written once, before any worker
    best: dict[str, dict[int, dict]] = {who: {} for who in CONTENDERS}
    for n in counts:
        runs: dict[str, list] = {who: [] for who in CONTENDERS}
        for _ in range(args.repeat):  # alternating, so drift hits all alike
            for who in CONTENDERS:
                runs[who].append(common.worker("throughput.py", who, str(n), str(max(counts))))
        for who in CONTENDERS:
            best[who][n] = max(runs[who], key=lambda r: r["tokens_per_s"])
        print(f"N={n:2d}  " + "   ".join(f"{who} {best[who][n]['tokens_per_s']:6.1f}"
                                         for who in CONTENDERS) + " tok/s", flush=True)
    if not args.no_write:
        report(counts, best)


def report(counts: list[int], best: dict[str, dict[int, dict]]) -> None:
    llama = best["llama"]
    rows = ["| sessions | ours tok/s | unified tok/s | Llama tok/s | ours / Llama | "
            "unified / Llama | TTFT p50 / p95 ms: ours, unified, Llama | "
            "ITL p50 / p95 ms: ours, unified, Llama |", "|---:|---:|---:|---:|---:|---:|---|---|"]
    for n in counts:
        cells = [best[who][n] for who in CONTENDERS]
        rate = [c["tokens_per_s"] for c in cells]
        ttft = ", ".join(f"{c['ttft50']:.0f} / {c['ttft95']:.0f}" for c in cells)
        itl = ", ".join(f"{c['itl50']:.1f} / {c['itl95']:.1f}" for c in cells)
        rows.append(f"| {n} | {rate[0]:.1f} | {rate[1]:.1f} | {rate[2]:.1f} | "
                    f"{rate[0] / rate[2]:.2f}x | {rate[1] / rate[2]:.2f}x | {ttft} | {itl} |")
    targets = []
    for n, goal in ((8, 2.0), (1, 1.0)):
        if n in llama:
            for who, label in (("ours", "default"), ("ours-unified", "kv_unified")):
                ratio = best[who][n]["tokens_per_s"] / llama[n]["tokens_per_s"]
                targets.append(f"- {n} session(s), {label}: {ratio:.2f}x `Llama` (target >= "
                               f"{goal}x): {common.verdict(ratio >= goal)}")
    plot(counts, best)
    body = (f"## Throughput: N concurrent sessions (`bench/throughput.py`)\n\n"
            f"{common.machine()}; model `bench/make_model.py` (Q8_0, 250M); flash attention "
            f"{FLASH} for all; n_ctx {N_CTX} per session; each session a ~20-token prompt and "
            f"64..128 greedy tokens; aggregate tokens/s = all tokens / wall time from the first "
            f"request to the last token. Best of alternating runs per point, each contender in "
            f"a fresh process.\n\n" + "\n".join(rows) + "\n\n" + "\n".join(targets)
            + "\n\n![tokens/s vs sessions](throughput.png)\n")
    common.write_section("throughput", body)


def plot(counts: list[int], best: dict[str, dict[int, dict]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for (who, (_, label)), style in zip(CONTENDERS.items(), ("o-", "^-", "s--")):
        ax.plot(counts, [best[who][n]["tokens_per_s"] for n in counts], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("aggregate decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(common.HERE / "throughput.png")


if __name__ == "__main__":
    main()
