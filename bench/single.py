"""One session's decode speed against llama.cpp's own: llama-bench (built from the llama.cpp
sources our bindings pin, bench/build_llama_bench.sh) measuring tg128 on the same model and
threads, alternated with our single session generating 128 greedy tokens through the public
API, its stream read by a thread as a user would. Our rate counts the tokens after the first
over the time from the first to the last (what tg measures: decode, no prompt).

A third contender shows what Python itself costs: the barest Python loop over the same bindings
(llama_decode, then a numpy argmax of the logits, nothing else), in a fresh process, with our
engine's context settings. No engine in Python can beat it.

Run: .venv/bin/python bench/single.py [--rounds 11]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import common
from common import THREADS
from make_model import model_path
from throughput import FLASH, N_CTX, Job, open_ours, run_ours

TOKENS = 128
PROMPT = "Story 0: once upon a time the little cat"
SLOTS = 8  # our context: n_seq_max 8, n_ctx N_CTX per sequence (as open_ours sets it up)


def llama_bench(binary: str, path: str) -> float:
    out = subprocess.run([binary, "-m", path, "-t", str(THREADS), "-p", "0", "-n", str(TOKENS),
                          "-r", "1", "-fa", "1" if FLASH == "on" else "0", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def ours(backend, path: str) -> float:
    outcome = run_ours(backend, path, [Job(PROMPT, TOKENS)])
    line = outcome.timelines[0]
    return (len(line.arrivals) - 1) / (line.arrivals[-1] - line.arrivals[0])


def bare_loop(path: str) -> float:
    """``--worker``: greedy decoding in the fewest Python steps, same context settings."""
    from wasi_nn_backend.llm.batch import Batch
    from wasi_nn_backend.llm.context import Context
    from wasi_nn_backend.llm.model import Model
    model = Model.load(path)
    prompt = model.tokenize(PROMPT, add_special=True, parse_special=True)
    rates = []
    with Context(model, n_ctx=N_CTX * SLOTS, n_batch=512, n_seq_max=SLOTS, n_threads=THREADS,
                 n_threads_batch=THREADS, flash_attn=FLASH, kv_unified=False) as ctx:
        batch = Batch(512)
        for _ in range(2):  # the first is a warm-up
            ctx.seq_rm(0)
            batch.clear()
            last = batch.add_sequence(prompt, 0, 0)
            assert ctx.decode(batch) == 0
            token = int(ctx.logits_view(last).argmax())
            began = time.perf_counter()
            for i in range(TOKENS - 1):
                batch.clear()
                batch.add(token, len(prompt) + i, 0, True)
                assert ctx.decode(batch) == 0
                token = int(ctx.logits_view(0).argmax())
            rates.append((TOKENS - 1) / (time.perf_counter() - began))
    model.close()
    return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = model_path()
    if args.worker:
        print(json.dumps(bare_loop(path)))
        return
    binary = subprocess.run([str(common.HERE / "build_llama_bench.sh")], check=True,
                            capture_output=True, text=True).stdout.strip()
    rates: dict[str, list[float]] = {"llama-bench": [], "bare Python loop": [],
                                     "wasi-nn-backend, 1 session": []}
    with open_ours(path, SLOTS) as backend:
        ours(backend, path)  # warm-up
        for _ in range(args.rounds):
            rates["llama-bench"].append(llama_bench(binary, path))
            rates["bare Python loop"].append(common.worker("single.py"))
            rates["wasi-nn-backend, 1 session"].append(ours(backend, path))
            print("   ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    base = medians["llama-bench"]
    rows = "\n".join(f"| {k} | {medians[k]:.1f} | {medians[k] / base:.1%} | "
                     f"{', '.join(f'{x:.1f}' for x in v)} |" for k, v in rates.items())
    share = medians["wasi-nn-backend, 1 session"] / base
    body = (f"## One session vs llama.cpp itself (`bench/single.py`)\n\n{common.machine()}; "
            f"tg{TOKENS}, flash attention {FLASH}, {args.rounds} alternating rounds, medians."
            f"\n\n| | decode tokens/s (median) | of llama-bench | rounds |\n"
            f"|---|---:|---:|---|\n{rows}\n\n"
            f"- ours is {share:.1%} of llama-bench (target >= 97%): "
            f"{common.verdict(share >= 0.97)}\n"
            f"- the bare Python loop (llama_decode + argmax, no engine) is "
            f"{medians['bare Python loop'] / base:.1%}\n")
    common.publish("single", body, write=not args.no_write)


if __name__ == "__main__":
    main()
