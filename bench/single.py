"""One session's decode speed against llama.cpp's own: llama-bench (built from the llama.cpp
sources our bindings pin, bench/build_llama_bench.sh) measuring tg128 on the same model and
threads, alternated with our single session generating 128 greedy tokens through the public
API, its stream read by a thread as a user would. Our rate counts the tokens after the first
over the time from the first to the last (what tg measures: decode, no prompt).

Run: .venv/bin/python bench/single.py [--rounds 11]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess

import common
from common import THREADS
from make_model import model_path
from throughput import FLASH, Job, open_ours, run_ours

TOKENS = 128


def llama_bench(binary: str, path: str) -> float:
    out = subprocess.run([binary, "-m", path, "-t", str(THREADS), "-p", "0", "-n", str(TOKENS),
                          "-r", "1", "-fa", "1" if FLASH == "on" else "0", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def ours(backend, path: str) -> float:
    outcome = run_ours(backend, path, [Job("Story 0: once upon a time the little cat", TOKENS)])
    line = outcome.timelines[0]
    return (len(line.arrivals) - 1) / (line.arrivals[-1] - line.arrivals[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    path = model_path()
    binary = subprocess.run([str(common.HERE / "build_llama_bench.sh")], check=True,
                            capture_output=True, text=True).stdout.strip()
    mine, theirs = [], []
    with open_ours(path, 8) as backend:
        ours(backend, path)  # warm-up
        for _ in range(args.rounds):
            theirs.append(llama_bench(binary, path))
            mine.append(ours(backend, path))
            print(f"llama-bench {theirs[-1]:.1f} tok/s   ours {mine[-1]:.1f} tok/s", flush=True)
    a, b = statistics.median(mine), statistics.median(theirs)
    body = (f"## One session vs llama.cpp itself (`bench/single.py`)\n\n{common.machine()}; "
            f"tg{TOKENS}, flash attention {FLASH}, {args.rounds} alternating rounds, medians."
            f"\n\n| | decode tokens/s (median) | rounds |\n|---|---:|---|\n"
            f"| llama-bench | {b:.1f} | {', '.join(f'{x:.1f}' for x in theirs)} |\n"
            f"| wasi-nn-backend, 1 session | {a:.1f} | {', '.join(f'{x:.1f}' for x in mine)} |"
            f"\n\n- ours is {a / b:.1%} of llama-bench (target >= 97%): "
            f"{common.verdict(a / b >= 0.97)}\n")
    common.publish("single", body, write=not args.no_write)


if __name__ == "__main__":
    main()
