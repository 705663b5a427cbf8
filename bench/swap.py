"""Resuming a swapped session vs prefilling it again. Session A holds a 1,500-token history;
two other sessions then take both KV slots, so A loses its slot: with swap on (memory
max_memory_mb > 0) its KV cells go to host RAM and come back bit-exact (llama_state_seq_*);
with swap off they are dropped and A's next request prefills its history again. Measured:
A's time to first token for a follow-up request of a few new tokens (this includes saving the
session whose slot A takes), best of several rounds, both ways in one run.

Run: .venv/bin/python bench/swap.py [--history 1500] [--rounds 3]
"""
from __future__ import annotations

import argparse
import time

import common
from common import THREADS
from make_model import model_path

from wasi_nn_backend import Backend

ASK = {"temperature": 0, "ignore_eos": True, "max_tokens": 1}


def history_text(n_words: int, graph) -> str:
    words = "the cat sat on the little dog and ran to see the sun when it was up".split()
    text = " ".join(words[i % len(words)] + str(i % 7) for i in range(n_words))
    return text


def fit(graph, target: int) -> str:
    """A text of exactly ``target`` tokens (with BOS)."""
    session = graph.session()
    low, high = 1, target
    while low < high:  # most words whose tokens fit
        mid = (low + high + 1) // 2
        if len(session.tokenize_prompt(history_text(mid, graph))) <= target:
            low = mid
        else:
            high = mid - 1
    session.close()
    return history_text(low, graph)


def resume_seconds(path: str, history: int, swap: bool, rounds: int) -> tuple[float, dict, int]:
    config = {"model": {"n_ctx": history + 256, "n_seq_max": 2, "n_batch": 512,
                        "threads": THREADS, "threads_batch": THREADS, "flash_attn": "off"},
              "memory": {"max_memory_mb": 1024 if swap else 0},
              "logging": {"level": "warning"}}
    best = float("inf")
    with Backend(config) as backend:
        graph = backend.load(path)
        text = fit(graph, history)
        a = graph.session()
        prompt_tokens = a.complete(text, **ASK).prompt_tokens
        for round_ in range(rounds):
            for other in range(2):  # both slots taken: A is swapped out (or evicted)
                graph.session().complete(f"Other session {round_} {other} says hello", **ASK)
            began = time.perf_counter()
            done = a.complete(text + f" and then {round_}", **ASK)
            best = min(best, time.perf_counter() - began)
            assert done.prefilled_tokens < 16 if swap else done.prefilled_tokens > history // 2
        counters = graph.engine.counters.snapshot()
    return best, counters, prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    path = model_path()
    swapped, counters, tokens = resume_seconds(path, args.history, True, args.rounds)
    prefill, _, _ = resume_seconds(path, args.history, False, args.rounds)
    ratio = prefill / swapped
    body = (f"## Swapped-session resume (`bench/swap.py`)\n\n{common.machine()}; a "
            f"{tokens}-token history; time to first token of a follow-up request, best of "
            f"{args.rounds}.\n\n| resume by | TTFT ms |\n|---|---:|\n"
            f"| restoring the swapped KV state | {swapped * 1000:.0f} |\n"
            f"| prefilling the history again | {prefill * 1000:.0f} |\n\n"
            f"- swap-in is {ratio:.1f}x faster than re-prefill (target >= 5x): "
            f"{common.verdict(ratio >= 5)} ({counters['offloads']} swap-outs, "
            f"{counters['restores']} swap-ins in the swap run)\n")
    common.publish("swap", body, write=not args.no_write)


if __name__ == "__main__":
    main()
