"""Throughput under concurrency: N sessions (1, 2, 4, 8, 16) at once, each a short prompt and
64..128 new greedy tokens, through the public API (Backend -> Graph -> Session.complete_stream,
one thread per session reading its stream). Beside it, in the same run, llama-cpp-python's
high-level ``Llama`` on the same model and threads: the natural Python alternative, one
generation at a time behind a lock (each thread streams its completion when it gets the lock).

Reports aggregate decode tokens/s (all generated tokens / wall time from the first request to
the last token), time to first token (TTFT) p50/p95 and inter-token latency (ITL) p50/p95.
Writes its section of bench/RESULTS.md and bench/throughput.png.

Run: .venv/bin/python bench/throughput.py [--sessions 1,2,4,8,16] [--repeat 2]
"""
from __future__ import annotations

import argparse
import random
import threading
import time
from dataclasses import dataclass

import common
from common import THREADS, EOG, Timeline, percentile, run_threads
from make_model import model_path

from wasi_nn_backend import Backend

N_CTX = 512  # per session; prompts are ~20 tokens, replies <= 128
FLASH = "off"  # the faster setting of the two on this CPU for both contenders (see RESULTS.md)


@dataclass
class Job:
    prompt: str
    tokens: int


def jobs(n: int) -> list[Job]:
    rng = random.Random(n)
    return [Job(f"Story {i}: once upon a time the little cat and the dog ran to see the sun "
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
    bias = {token: -1e9 for token in EOG}

    def one(job: Job) -> None:
        line = timelines[id(job)]
        line.sent = time.perf_counter()
        with lock:
            for chunk in llm.create_completion(job.prompt, max_tokens=job.tokens,
                                               temperature=0.0, logit_bias=bias, stream=True):
                line.arrivals.append(time.perf_counter())
                line.tokens += 1
    seconds = run_threads(work, one)
    return Outcome(seconds, list(timelines.values()))


def open_ours(path: str, n_seq: int) -> Backend:
    backend = Backend({"backend": {"max_concurrent": n_seq, "max_sessions": 4 * n_seq},
                       "model": {"n_ctx": N_CTX, "n_seq_max": n_seq, "n_batch": 512,
                                 "threads": THREADS, "threads_batch": THREADS,
                                 "flash_attn": FLASH},
                       "logging": {"level": "warning"}})
    backend.load(path)
    return backend


def open_llama(path: str):
    from llama_cpp import Llama
    return Llama(path, n_ctx=N_CTX, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                 flash_attn=FLASH == "on", verbose=False, seed=0)


def best(outcomes: list[Outcome]) -> Outcome:
    return max(outcomes, key=lambda o: o.tokens_per_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,2,4,8,16")
    parser.add_argument("--repeat", type=int, default=2, help="runs per point; the best counts")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    path = model_path()
    llm = open_llama(path)
    ours_by_n, llama_by_n = {}, {}
    for n in counts:
        work = jobs(n)
        with open_ours(path, max(counts)) as backend:
            run_ours(backend, path, jobs(1))  # warm-up
            run_llama(llm, jobs(1))
            mine, theirs = [], []
            for _ in range(args.repeat):  # interleaved, so drift hits both alike
                mine.append(run_ours(backend, path, work))
                theirs.append(run_llama(llm, work))
        ours_by_n[n], llama_by_n[n] = best(mine), best(theirs)
        print(f"N={n:2d}  ours {ours_by_n[n].tokens_per_s:7.1f} tok/s   "
              f"Llama {llama_by_n[n].tokens_per_s:7.1f} tok/s   "
              f"ratio {ours_by_n[n].tokens_per_s / llama_by_n[n].tokens_per_s:.2f}", flush=True)
    if not args.no_write:
        report(counts, ours_by_n, llama_by_n)


def report(counts, ours, llama) -> None:
    rows = ["| sessions | ours tok/s | Llama tok/s | ratio | ours TTFT p50 / p95 ms | "
            "Llama TTFT p50 / p95 ms | ours ITL p50 / p95 ms | Llama ITL p50 / p95 ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in counts:
        a, b = ours[n], llama[n]
        rows.append(f"| {n} | {a.tokens_per_s:.1f} | {b.tokens_per_s:.1f} | "
                    f"{a.tokens_per_s / b.tokens_per_s:.2f}x | {a.ttft(50):.0f} / "
                    f"{a.ttft(95):.0f} | {b.ttft(50):.0f} / {b.ttft(95):.0f} | "
                    f"{a.itl(50):.1f} / {a.itl(95):.1f} | {b.itl(50):.1f} / {b.itl(95):.1f} |")
    targets = []
    if 8 in ours:
        ratio = ours[8].tokens_per_s / llama[8].tokens_per_s
        targets.append(f"- 8 sessions: {ratio:.2f}x `Llama` (target >= 2.0x): "
                       f"{common.verdict(ratio >= 2.0)}")
    if 1 in ours:
        ratio = ours[1].tokens_per_s / llama[1].tokens_per_s
        targets.append(f"- 1 session: {ratio:.2f}x `Llama` (target >= 1.0x): "
                       f"{common.verdict(ratio >= 1.0)}")
    plot(counts, ours, llama)
    body = (f"## Throughput: N concurrent sessions (`bench/throughput.py`)\n\n"
            f"{common.machine()}; model `bench/make_model.py` (Q8_0, 250M); flash attention "
            f"{FLASH}; each session a ~20-token prompt and 64..128 greedy tokens; best of "
            f"the interleaved runs per point.\n\n" + "\n".join(rows) + "\n\n"
            + "\n".join(targets) + "\n\n![tokens/s vs sessions](throughput.png)\n")
    common.write_section("throughput", body)


def plot(counts, ours, llama) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(counts, [ours[n].tokens_per_s for n in counts], "o-", label="wasi-nn-backend")
    ax.plot(counts, [llama[n].tokens_per_s for n in counts], "s--",
            label="llama-cpp-python Llama (behind a lock)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("aggregate decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(common.HERE / "throughput.png")


if __name__ == "__main__":
    main()
