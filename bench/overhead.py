"""Python's share of an engine step: the time per step spent outside llama_decode (planning,
batch filling, sampling calls, stop checks, text and stream hand-off), total and per session,
for 1 and 8 concurrent sessions; then a cProfile of the engine thread's steps showing where
that time goes. The engine counts step_seconds (whole steps) and decode_seconds (inside
llama_decode); reader threads consume every stream as users would.

Run: .venv/bin/python bench/overhead.py [--sessions 1,8] [--tokens 96]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
SORT, LIMIT = ("tottime",), 14

import common
from make_model import model_path
from throughput import jobs, open_ours, run_ours


def measure(path: str, n: int, tokens: int, profile: bool) -> tuple[dict, str]:
    work = jobs(n)
    for job in work:
        job.tokens = tokens
    with open_ours(path, max(n, 1)) as backend:
        engine = backend.graphs[0].engine
        run_ours(backend, path, jobs(1))  # warm-up
        before = engine.counters.snapshot()
        profiler = None
        if profile:
            profiler = cProfile.Profile()
            step = engine._step

            def profiled_step() -> None:  # the engine thread's steps only
                profiler.enable()
                try:
                    step()
                finally:
                    profiler.disable()
            engine._step = profiled_step
        run_ours(backend, path, work)
        after = engine.counters.snapshot()
    delta = {k: after[k] - before[k] for k in ("steps", "step_seconds", "decode_seconds",
                                               "decode_tokens")}
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
    rows = ["| sessions | steps | step ms | llama_decode ms | outside decode ms | "
            "outside per session ms | outside share |", "|---:|---:|---:|---:|---:|---:|---:|"]
    shares, profiles = {}, {}
    for n in (int(x) for x in args.sessions.split(",")):
        d, _ = measure(path, n, args.tokens, profile=False)
        steps = d["steps"]
        step_ms = d["step_seconds"] / steps * 1000
        decode_ms = d["decode_seconds"] / steps * 1000
        outside = step_ms - decode_ms
        shares[n] = outside / step_ms
        rows.append(f"| {n} | {steps} | {step_ms:.2f} | {decode_ms:.2f} | {outside:.3f} | "
                    f"{outside / n:.3f} | {shares[n]:.1%} |")
        print(rows[-1], flush=True)
        _, profiles[n] = measure(path, n, args.tokens, profile=True)
    verdict = ""
    if 8 in shares:
        verdict = (f"- at 8 sessions Python outside llama_decode is {shares[8]:.1%} of step "
                   f"time (target <= 3%): {common.verdict(shares[8] <= 0.03)}\n")
    top = max(profiles)
    body = (f"## Python overhead per engine step (`bench/overhead.py`)\n\n{common.machine()}; "
            f"{args.tokens} greedy tokens per session.\n\n" + "\n".join(rows) + "\n\n" + verdict
            + f"\nWhere the engine thread's time goes at {top} sessions (cProfile of the steps; "
            "profiling inflates Python's share):\n\n```\n"
            + "\n".join(profiles[top].strip().splitlines()[:30]) + "\n```\n")
    common.publish("overhead", body, write=not args.no_write)


if __name__ == "__main__":
    main()
