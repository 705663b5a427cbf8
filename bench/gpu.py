"""The GPU table of issue 16: ours vs llama.cpp's llama-batched-bench (C++ decode only) and
llama-server (-np = the session count), from the same CUDA build, greedy and sampled
(temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), 1 / 8 / 32 / 64 sessions, each a
~20-token prompt and 128 new tokens, every layer on the GPU. Decode tokens/s, prefill left out
on every side: batched-bench's S_TG; for the server, tokens after each request's first / (last
token - first first token), from streamed pieces; for ours the same on the engine's clock,
with a reader thread per stream and with one reader for all (bench/scale.py). One contender
per process. With its layers on the GPU our engine emits a step's text while the next step
computes (model.async_output "auto").

The model: a random-weight F16 llama of ~0.85B parameters (n_embd 2048, 16 layers, 16 query
heads over 4 KV heads, n_ff 5632, vocabulary 32000), written by the bench's model writer.

On the GPU machine (../shared/gpu/README.md; every figure lands in --out):
    BUILD_LIMIT=400 bash .gpu/run.sh python3 bench/gpu.py --out $OUT
Here, a dry run of the same code on the CPU (the tiny bench/scale.py model, fewer sessions):
    .venv/bin/python bench/gpu.py --shape tiny --sessions 1,8 --out /tmp/gpu-dry
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
from pathlib import Path

import common
from scale import N_CTX, PROMPT_TOKENS, SAMPLED, run_worker
from serving import free_port, launched, llama_server_command

HERE = Path(__file__).resolve().parent
SHAPES = {"h200": {"n_embd": 2048, "n_layer": 16, "n_head": 16, "n_head_kv": 4, "n_ff": 5632,
                   "n_vocab": 32000, "n_ctx_train": 4096},
          "tiny": {"n_vocab": 32000}}
WORDS = "once upon a time the little cat and the dog ran to see the sun and sat"


def model(shape: str, where: Path) -> str:
    path = where / f"gpu-{shape}-f16.gguf"
    if not path.exists():
        from wasi_nn_backend.testing.tiny_model import write_tiny_llama
        where.mkdir(parents=True, exist_ok=True)
        write_tiny_llama(path, seed=16, quant="f16", **SHAPES[shape])
    return str(path)


def binaries() -> Path:
    """$LLAMA_CUDA_BIN on the GPU machine; here the CPU build bench/ makes."""
    if os.environ.get("LLAMA_CUDA_BIN"):
        return Path(os.environ["LLAMA_CUDA_BIN"])
    return common.llama_tools("llama-batched-bench", "llama-server")


def batched_bench(bin_dir: Path, path: str, counts: list[int], tokens: int) -> dict[int, float]:
    rows = common.batched_bench(bin_dir, path, counts, PROMPT_TOKENS, tokens, N_CTX,
                                "-ngl", "99")
    return {n: row["speed_tg"] for n, row in rows.items()}


def _stream_one(port: int, body: dict, stamps: list[float]) -> int:
    """One streamed /completion; the arrival time of each piece into ``stamps``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
    response, count = conn.getresponse(), 0
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        event = json.loads(line[5:])
        if event.get("content") or event.get("tokens"):
            stamps.append(time.perf_counter())
            count += 1
        if event.get("stop"):
            break
    conn.close()
    return count


def server(bin_dir: Path, path: str, sessions: int, tokens: int, mode: str) -> float:
    """llama-server -np ``sessions``: decode tokens/s over ``sessions`` concurrent streams."""
    port = free_port()
    command = llama_server_command(bin_dir, path, port, sessions, N_CTX, 2, "-ngl", "99",
                                   "-fa", "on")
    with launched(command, port):
        ask = {"n_predict": tokens, "ignore_eos": True, "stream": True, "cache_prompt": False,
               **({"temperature": 0} if mode == "greedy" else SAMPLED)}
        stamps: list[list[float]] = [[] for _ in range(sessions)]
        counts = [0] * sessions

        def one(i: int) -> None:
            counts[i] = _stream_one(port, {"prompt": f"{i} {WORDS}", "seed": 1000 + i, **ask},
                                    stamps[i])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first = min(s[0] for s in stamps if s)
        last = max(s[-1] for s in stamps if s)
        return (sum(counts) - sessions) / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="h200")
    parser.add_argument("--sessions", default="1,8,32,64")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in args.sessions.split(",")]
    path = model(args.shape, Path(os.environ.get("TMPDIR", "/tmp")) / "wnb-gpu-models")
    bin_dir = binaries()
    figures: dict[str, dict] = {"cpp_decode": batched_bench(bin_dir, path, counts, args.tokens),
                                "server": {}, "ours": {}}
    print("llama-batched-bench:", figures["cpp_decode"], flush=True)
    for n in counts:
        for mode in ("greedy", "sampled"):
            figures["server"][f"{n} {mode}"] = server(bin_dir, path, n, args.tokens, mode)
            for readers, key in (("each", f"{n} {mode}"), ("one", f"{n} {mode} one")):
                result = run_worker(path, n, args.tokens, mode, readers, gpu_layers=99)
                figures["ours"][key] = result["tokens_per_s"]
            print(f"{n} {mode}: server {figures['server'][f'{n} {mode}']:.0f}, ours "
                  f"{figures['ours'][f'{n} {mode}']:.0f} / one reader "
                  f"{figures['ours'][f'{n} {mode} one']:.0f}", flush=True)
    lines = [f"## GPU (`bench/gpu.py`, shape {args.shape})\n",
             "| sessions | llama-batched-bench decode | llama-server greedy | ours greedy "
             "(share of C++), a reader per stream / one reader | llama-server sampled | ours "
             "sampled (vs server), a reader per stream / one reader |",
             "|---|---|---|---|---|---|"]
    for n in counts:
        cpp = figures["cpp_decode"].get(n, float("nan"))
        ours = figures["ours"]
        g, g1 = ours[f"{n} greedy"], ours[f"{n} greedy one"]
        s, s1 = ours[f"{n} sampled"], ours[f"{n} sampled one"]
        sg, ss = figures["server"][f"{n} greedy"], figures["server"][f"{n} sampled"]
        lines.append(f"| {n} | {cpp:,.0f} | {sg:,.0f} | {g:,.0f} ({g / cpp:.0%}) / {g1:,.0f} "
                     f"({g1 / cpp:.0%}) | {ss:,.0f} | {s:,.0f} ({s / ss:.2f}x) / {s1:,.0f} "
                     f"({s1 / ss:.2f}x) |")
    table = "\n".join(lines) + "\n"
    (out / "gpu.json").write_text(json.dumps(figures, indent=1))
    (out / "gpu.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
