"""Does a session's greedy output change when other sessions run beside it? And what does
deterministic mode cost? Q8_0 model (random weights, 4 layers x 256/512 dims), one session of
32 greedy tokens alone and beside 7 sessions that prefill 120-word prompts and generate.

Run: .venv/bin/python bench/deterministic.py  (writes bench/results/deterministic.md)
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from wasi_nn_backend import Backend
from wasi_nn_backend.testing.tiny_model import write_tiny_llama

ASK = {"temperature": 0, "ignore_eos": True, "max_tokens": 32}


def run(path: str, busy: int, **model) -> tuple[tuple[int, ...], float, int]:
    config = {"model": {"n_ctx": 1024, "n_seq_max": 8, "n_batch": 128, **model}}
    with Backend(config) as backend:
        graph = backend.load(path)
        began = time.perf_counter()
        mine = graph.session().complete_stream("The quick brown fox jumps over the lazy dog",
                                               **ASK)
        others = [graph.session().complete_stream(
            " ".join(f"word{i}{j}" for j in range(120)), **{**ASK, "max_tokens": 64})
            for i in range(busy)]
        tokens = mine.result().generated_tokens
        total = len(tokens) + sum(len(o.result().generated_tokens) for o in others)
        return tokens, time.perf_counter() - began, total


def main() -> None:
    rows = ["| n_embd | KV | deterministic | tokens changed beside 7 busy (of 32) | "
            "all 8 sessions: tokens/s |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for n_embd in (256, 512):
            path = str(write_tiny_llama(Path(folder) / f"q8-{n_embd}.gguf", quant="q8_0",
                                        n_embd=n_embd, n_ff=2 * n_embd, n_layer=4, n_head=8,
                                        n_head_kv=4))
            for unified, deterministic in ((True, False), (False, False), (False, True)):
                alone, _, _ = run(path, 0, kv_unified=unified, deterministic=deterministic)
                crowded, seconds, total = run(path, 7, kv_unified=unified,
                                              deterministic=deterministic)
                changed = sum(a != b for a, b in zip(alone, crowded))
                rows.append(f"| {n_embd} | {'unified' if unified else 'per session'} | "
                            f"{deterministic} | {changed} | {total / seconds:.0f} |")
    text = "\n".join(rows)
    print(text)
    out = Path(__file__).parent / "results" / "deterministic.md"
    out.write_text(f"# Output stability under load (Q8_0)\n\n{__doc__}\n{text}\n")


if __name__ == "__main__":
    main()
