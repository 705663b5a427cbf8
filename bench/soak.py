"""Soak: many threads open, chat, stream, cancel and close sessions for a while, as a
controller hot-swaps the graph between two models and loads and unloads a second graph under
running requests. Every greedy reply is compared with the same conversation run alone.
Counted: operations by kind, errors by code, replies equal alone, hangs (an operation past
60 s, or a thread that does not stop), KV restore failures (the engines' counter and
the warning lines), RSS over time. Stops by itself after --seconds (or --ops operations).

Run: .venv/bin/python bench/soak.py [--threads 64] [--seconds 180] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import common
from soak_ops import GREEDY, HANG_S, Conversations, Tally, rss_mb
from swap import resume_seconds

from wasi_nn_backend import Backend
from wasi_nn_backend.testing.tiny_model import write_tiny_llama
from wasi_nn_backend.errors import WasiNnError

CONFIG = {"model": {"n_ctx": 256, "n_seq_max": 8, "threads": 1},
          "memory": {"max_memory_mb": 64},
          "backend": {"max_sessions": 4000, "max_concurrent": 8, "queue_size": 4096,
                      "queue_reject_threshold": 4096, "queue_warning_threshold": 0},
          "logging": {"level": "error"}}
SIDE = {"model": {"n_ctx": 128, "n_seq_max": 4, "threads": 1}}  # the graph loaded and unloaded


class RestoreLines(logging.Handler):
    """Counts the engines' 'could not be restored' / 'could not be moved' warnings, by the
    reason they give (the backend's own handlers stay at level error: nothing printed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "could not be restored" in message or "could not be moved" in message:
            reason = message.partition("(")[2].partition(")")[0] or message.split(": ", 1)[-1]
            self.reasons[reason] += 1

    def __enter__(self) -> RestoreLines:
        logging.getLogger("wasi_nn_backend").addHandler(self)
        logging.getLogger("wasi_nn_backend.engine").setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("wasi_nn_backend").removeHandler(self)
        logging.getLogger("wasi_nn_backend.engine").setLevel(logging.NOTSET)


def controller(backend, graph, paths, conversations, tally, stop, every) -> None:
    """Hot swap the main graph every ``every`` s; every third time, load a side graph, start
    requests on it and unload it under them."""
    turn = 0
    while not stop.wait(every):
        turn += 1
        try:
            graph.replace_model(paths[turn % 2])
            tally.op("hot_swap")
            if turn % 3 == 0:
                side_graph(backend, paths[turn % 2], conversations, tally)
        except WasiNnError as error:
            tally.error("controller", error)


def side_graph(backend, path, conversations, tally) -> None:
    side = backend.load(path, SIDE)
    streams = []
    for index in range(4):
        session = side.session()
        streams.append(session.chat_stream(conversations.scripts[index][1][0], GREEDY))
    streams[0].get(timeout=HANG_S)  # one is generating: unload under it
    side.close()
    for stream in streams:
        try:
            stream.result(timeout=HANG_S)
        except WasiNnError as error:
            tally.error("unload", error)
        except TimeoutError:
            tally.hang("unload")
    tally.op("unload")


def monitor(tally, stop, samples, every=2.0) -> None:
    """RSS every ``every`` s; operations running past HANG_S counted as hangs."""
    began = time.monotonic()
    while not stop.wait(every):
        samples.append((round(time.monotonic() - began, 1), rss_mb()))
        tally.watch(HANG_S)


def soak(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    paths = [str(write_tiny_llama(folder / f"tiny-{seed}.gguf", seed=seed)) for seed in (0, 1)]
    conversations = Conversations(paths, CONFIG, count=args.conversations)
    tally = Tally(args.threads)
    stop, samples = threading.Event(), [(0.0, rss_mb())]
    with RestoreLines() as lines, Backend(CONFIG) as backend:
        graph = backend.load(paths[0])
        deadline = time.monotonic() + args.seconds

        def work(index: int) -> None:
            rng = random.Random(index)
            held: list = []
            while time.monotonic() < deadline and tally.total < args.ops:
                conversations.one(graph, rng, held, tally, index)
            for session, *_ in held:
                session.close()
        workers = [threading.Thread(target=work, args=(i,), daemon=True)
                   for i in range(args.threads)]
        helpers = [threading.Thread(target=controller, daemon=True, args=(
                       backend, graph, paths, conversations, tally, stop, args.swap_every)),
                   threading.Thread(target=monitor, daemon=True, args=(tally, stop, samples))]
        began = time.monotonic()
        for thread in workers + helpers:
            thread.start()
        for thread in workers:
            thread.join(timeout=max(1.0, deadline - time.monotonic()) + HANG_S)
        stuck = sum(thread.is_alive() for thread in workers)
        stop.set()
        for thread in helpers:
            thread.join(timeout=HANG_S)
        seconds = time.monotonic() - began
        samples.append((round(seconds, 1), rss_mb()))
        stats = backend.stats()
        engine = stats.engines.get(graph.handle, {})
    return {"threads": args.threads, "seconds": round(seconds, 1), **tally.report(),
            "threads_stuck": stuck, "restore_failures_logged": sum(lines.reasons.values()),
            "restore_failures_why": dict(lines.reasons),
            "restore_failures_counted": getattr(stats, "restore_failures", None),
            "restores": engine.get("restores"), "offloads": engine.get("offloads"),
            "rss_mb": samples, "sessions_left": stats.sessions,
            "models_loaded": stats.models_loaded, "paths": paths}


def restore_cost(path: str, history: int) -> dict:
    """Time to first token of a swapped session of ``history`` tokens: restored vs prefilled
    again (bench/swap.py's measurement, on the soak's model)."""
    history = max(16, history)
    restore, _, _ = resume_seconds(path, history, True, 5)
    prefill, _, _ = resume_seconds(path, history, False, 5)
    return {"history": history, "restore": restore, "prefill": prefill}


def markdown(result: dict, args) -> str:
    rss, cost = result["rss_mb"], result["cost"]
    share = 100 * result["prefilled_tokens"] / max(1, result["prompt_tokens"])
    why = "".join(f", {n} {reason}" for reason, n in result["restore_failures_why"].items())
    ops = ", ".join(f"{kind} {n}" for kind, n in sorted(result["ops"].items()))
    errors = ", ".join(f"{code} {n}" for code, n in sorted(result["errors"].items())) or "none"
    return (
        f"## Soak (`bench/soak.py`)\n\n{common.machine()}; {result['threads']} threads for "
        f"{result['seconds']:.0f} s on two tiny F32 models (n_ctx 256, 8 KV slots, swap "
        f"64 MB), hot swap every {args.swap_every:.0f} s, a side graph unloaded under running "
        f"requests every third swap.\n\n"
        f"- operations: {ops}\n"
        f"- replies compared with the same conversation run alone: {result['compared']}, "
        f"equal: {result['compared'] - result['mismatches']}\n"
        f"- hangs: {result['hangs']} (operations past {HANG_S:.0f} s), threads stuck at the "
        f"end: {result['threads_stuck']}\n"
        f"- errors by code: {errors}\n"
        f"- KV restore failures: {result['restore_failures_logged']} logged{why} (the model "
        f"served at the end: "
        f"{result['offloads']} swap-outs, {result['restores']} swap-ins)\n"
        f"- prompt tokens of the replies compared: {result['prompt_tokens']}, prefilled "
        f"{result['prefilled_tokens']} ({share:.1f}%; the rest reused from the session's KV, "
        f"restored or copied)\n"
        f"- resuming a swapped session of the soak's mean history ({cost['history']} tokens, "
        f"time to first token, best of 5): {cost['restore'] * 1000:.2f} ms restoring its KV "
        f"state, {cost['prefill'] * 1000:.2f} ms prefilling it again\n"
        f"- sessions opened: {result['sessions_opened']}; open at the end: "
        f"{result['sessions_left']}; models loaded at the end: {result['models_loaded']}\n"
        f"- RSS: {rss[0][1]:.0f} MB at the start, {rss[len(rss) // 3][1]:.0f} MB at "
        f"{rss[len(rss) // 3][0]:.0f} s, {rss[-1][1]:.0f} MB at the end, peak "
        f"{max(r for _, r in rss):.0f} MB\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--ops", type=int, default=10**9, help="stop after this many")
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--swap-every", type=float, default=5.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    result = soak(args)
    result["cost"] = restore_cost(result["paths"][0],
                                  result["prompt_tokens"] // max(1, result["compared"]))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mb"}))
    common.publish("soak", markdown(result, args), write=not args.no_write)
    ok = not (result["mismatches"] or result["hangs"] or result["threads_stuck"])
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
