"""Python's share of an engine step: the engine thread's wall time per step, from the first
step's start to the last step's end (so planning, batch filling, sampling, stop checks, text
and stream hand-off, inbox commands, the loop and taking the GIL back after each decode all
count), minus the compute time llama.cpp itself records for its decodes (llama_perf_context:
t_eval_ms + t_p_eval_ms). Total and per session, for 1 and 8 concurrent sessions; then a
cProfile of the engine thread's steps showing where that time goes. Reader threads consume
every stream as users would.

Run: .venv/bin/python bench/overhead.py [--sessions 1,8] [--tokens 96]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import common
from make_model import model_path
from throughput import jobs, open_ours, run_ours


SORT, LIMIT = ("tottime",), 14


def llama_compute_ms(engine) -> float:
    perf = engine.call(engine.context.perf).result()  # read on the engine thread
    return perf["t_eval_ms"] + perf["t_p_eval_ms"]


def measure(path: str, n: int, tokens: int, profile: bool) -> tuple[dict, str]:
    work = jobs(n)
    for job in work:
        job.tokens = tokens
    with open_ours(path, max(n, 1)) as backend:
        engine = backend.graphs[0].engine
        run_ours(backend, path, jobs(1))  # warm-up
        before, compute_before = engine.counters.snapshot(), llama_compute_ms(engine)
        step, span, profiler = engine._step, [], cProfile.Profile() if profile else None

        def timed_step() -> None:  # the engine thread's steps only
            began = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            try:
                step()
            finally:
                if profiler is not None:
                    profiler.disable()
                span[:] = [span[0] if span else began, time.perf_counter()]
        engine._step = timed_step
        run_ours(backend, path, work)
        engine._step = step
        after, compute_after = engine.counters.snapshot(), llama_compute_ms(engine)
    delta = {"steps": after["steps"] - before["steps"], "wall_seconds": span[1] - span[0],
             "compute_seconds": (compute_after - compute_before) / 1000}
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(*SORT).print_stats(LIMIT)
        text = out.getvalue()
    return delta, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,8")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    path = model_path()
    rows = ["| sessions | steps | engine wall ms per step | llama.cpp compute ms | "
            "outside ms | outside per session ms | outside share |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    shares, profiles = {}, {}
    for n in (int(x) for x in args.sessions.split(",")):
        d, _ = measure(path, n, args.tokens, profile=False)
        steps = d["steps"]
        step_ms = d["wall_seconds"] / steps * 1000
        decode_ms = d["compute_seconds"] / steps * 1000
        outside = step_ms - decode_ms
        shares[n] = outside / step_ms
        rows.append(f"| {n} | {steps} | {step_ms:.2f} | {decode_ms:.2f} | {outside:.3f} | "
                    f"{outside / n:.3f} | {shares[n]:.1%} |")
        print(rows[-1], flush=True)
        _, profiles[n] = measure(path, n, args.tokens, profile=True)
    verdict = ""
    if 8 in shares:
        verdict = (f"- at 8 sessions the time outside llama.cpp's compute is {shares[8]:.1%} of "
                   f"the engine's wall time (target <= 3%): "
                   f"{common.verdict(shares[8] <= 0.03)}\n")
    top = max(profiles)
    body = (f"## Python overhead per engine step (`bench/overhead.py`)\n\n{common.machine()}; "
            f"{args.tokens} greedy tokens per session.\n\n" + "\n".join(rows) + "\n\n" + verdict
            + f"\nWhere the engine thread's time goes at {top} sessions (cProfile of the steps; "
            "profiling inflates Python's share):\n\n```\n"
            + "\n".join(profiles[top].strip().splitlines()[:30]) + "\n```\n")
    common.publish("overhead", body, write=not args.no_write)


if __name__ == "__main__":
    main()
