"""Sampling inside llama.cpp's graph (backend sampling: llama_set_sampler per sequence,
llama_get_sampled_token_ith) vs reading the logits and taking the argmax in numpy, on this
CPU: a bare loop over the bindings (no engine), the cheap-decode 32k-vocab model of
bench/scale.py, greedy, 8 and 64 sequences decoding together, 128 steps. Each contender runs
in its own process, twice, alternating; the best run counts.

It answers one question before the engine uses backend sampling: does it pay on a CPU? On a
GPU it keeps the logits on the device; on a CPU the graph gains one small subgraph (argmax,
and the rest of a chain) per sequence.

Run: .venv/bin/python bench/backend_sampling.py [--sequences 8,64] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import common
from common import THREADS
from scale import N_CTX, model_path

STEPS = 128


def run(path: str, n: int, mode: str) -> dict:
    """One contender, in this process (--worker)."""
    import llama_cpp.llama_cpp as C

    from wasi_nn_backend.llm.batch import Batch
    from wasi_nn_backend.llm.context import Context
    from wasi_nn_backend.llm.model import Model
    model = Model.load(path)
    context = Context(model, n_ctx=N_CTX * n, n_batch=2048, n_seq_max=n, n_threads=THREADS,
                      n_threads_batch=THREADS, flash_attn="on")
    chains = []
    if mode == "backend":
        for seq in range(n):
            chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
            if not C.llama_set_sampler(context.handle, seq, chain):
                raise RuntimeError("llama.cpp refused the backend sampler")
            chains.append(chain)
    rng = random.Random(n)
    batch = Batch(2048)
    for seq in range(n):
        for pos in range(20):
            batch.add(rng.randrange(model.n_vocab), pos, seq, pos == 19)
    context.decode(batch)
    tokens = [0] * n
    began, decoding = time.perf_counter(), 0.0
    for step in range(STEPS):
        batch.clear()
        for seq in range(n):
            batch.add(tokens[seq], 20 + step, seq, True)
        start = time.perf_counter()
        if context.decode(batch) != 0:
            raise RuntimeError("llama_decode failed")
        decoding += time.perf_counter() - start
        if mode == "backend":
            tokens = [C.llama_get_sampled_token_ith(context.handle, i) for i in range(n)]
        else:
            tokens = [int(context.logits_view(i).argmax()) for i in range(n)]
    wall = time.perf_counter() - began
    for seq in range(n):
        C.llama_set_sampler(context.handle, seq, None)
    for chain in chains:
        C.llama_sampler_free(chain)
    context.close()
    model.close()
    return {"tokens_per_s": n * STEPS / wall, "decode_us": decoding / (n * STEPS) * 1e6}


def worker(path: str, n: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", path, str(n), mode],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", default="8,64")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, n, mode = args.worker
        print(json.dumps(run(path, int(n), mode)))
        return
    path = model_path()
    lines = [f"## Backend sampling on a CPU (`bench/backend_sampling.py`)\n\n{common.machine()}; "
             f"the bench/scale.py model, greedy, {STEPS} decode steps of one token per "
             "sequence, a bare loop over the bindings (best of 2 alternating runs).\n",
             "| sequences | logits + numpy argmax, tokens/s | sampled in the graph, tokens/s | "
             "graph / numpy |", "|---|---|---|---|"]
    ratios = []
    for n in [int(x) for x in args.sequences.split(",")]:
        best: dict[str, dict] = {}
        for _ in range(2):
            for mode in ("cpu", "backend"):
                result = worker(path, n, mode)
                if mode not in best or result["tokens_per_s"] > best[mode]["tokens_per_s"]:
                    best[mode] = result
        ratio = best["backend"]["tokens_per_s"] / best["cpu"]["tokens_per_s"]
        ratios.append(ratio)
        lines.append(f"| {n} | {best['cpu']['tokens_per_s']:,.0f} | "
                     f"{best['backend']['tokens_per_s']:,.0f} | {ratio:.2f}x |")
    if all(r < 1 for r in ratios):
        verdict = ("On this CPU the graph's per-sequence sampling ops cost more than the numpy "
                   "argmax they replace: sampling stays on the host here. On a GPU the logits "
                   "would stay on the device; that is to be measured there (issue 16).")
    else:
        verdict = "In this run sampling in the graph paid at some sequence count (the table)."
    body = "\n".join(lines) + "\n\n" + verdict + "\n"
    common.publish("backend_sampling", body, write=not args.no_write)


if __name__ == "__main__":
    main()
