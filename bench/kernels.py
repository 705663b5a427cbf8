"""What llama.cpp itself costs on this machine, without our engine: llama_decode time for a
step of b sessions' decode tokens (b = 1, 2, 4, 8, 16) at short and long context, and for a
40-token prompt chunk as its position grows, with flash attention on and off. These bound what
any scheduler on top can reach (see "What limits the numbers" in RESULTS.md).

Run: .venv/bin/python bench/kernels.py
"""
from __future__ import annotations

import argparse
import time

import common
from common import THREADS
from make_model import model_path

from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.model import Model

SIZES = (1, 2, 4, 8, 16)


def fill(ctx: Context, batch: Batch, seq: int, length: int) -> None:
    ctx.seq_rm(seq)
    for start in range(0, length, 256):
        batch.clear()
        end = min(length, start + 256)
        batch.add_sequence([(7 * i + seq) % 300 + 10 for i in range(start, end)], start, seq)
        assert ctx.decode(batch) == 0


def decode_steps(model: Model, flash: str, length: int, reps: int = 8) -> dict[int, float]:
    """ms per step of b one-token sequences whose histories hold ``length`` tokens."""
    out = {}
    with Context(model, n_ctx=2048 * 16, n_batch=512, n_seq_max=16, n_threads=THREADS,
                 n_threads_batch=THREADS, flash_attn=flash, kv_unified=False) as ctx:
        batch = Batch(512)
        for seq in range(max(SIZES)):
            fill(ctx, batch, seq, length)
        for size in SIZES:
            began = time.perf_counter()
            for i in range(reps):
                batch.clear()
                for seq in range(size):
                    batch.add(100 + i, length + i, seq, True)
                assert ctx.decode(batch) == 0
            out[size] = (time.perf_counter() - began) / reps * 1000
            for seq in range(size):
                ctx.seq_rm(seq, length, -1)
    return out


def prefill_chunks(model: Model, flash: str, chunks: int = 18) -> list[float]:
    """ms per 40-token chunk of one sequence, chunk k at position 40 k."""
    times = []
    with Context(model, n_ctx=2048, n_batch=512, n_seq_max=1, n_threads=THREADS,
                 n_threads_batch=THREADS, flash_attn=flash, kv_unified=False) as ctx:
        batch = Batch(512)
        for k in range(chunks):
            batch.clear()
            batch.add_sequence([(7 * i + k) % 300 + 10 for i in range(40)], 40 * k, 0)
            began = time.perf_counter()
            assert ctx.decode(batch) == 0
            times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    model = Model.load(model_path())
    rows = ["| flash attention | history | " + " | ".join(f"b={b}" for b in SIZES)
            + " | tokens/s at b=8 / b=1 |", "|---|---:|" + "---:|" * (len(SIZES) + 1)]
    prefill = ["| flash attention | 40-token chunk at position 0 | 320 | 680 | growth |",
               "|---|---:|---:|---:|---:|"]
    for flash in ("on", "off"):
        for length in (20, 1000):
            ms = decode_steps(model, flash, length)
            speedup = (8 / ms[8]) / (1 / ms[1])
            rows.append(f"| {flash} | {length} | " + " | ".join(f"{ms[b]:.1f}" for b in SIZES)
                        + f" | {speedup:.2f}x |")
        chunks = prefill_chunks(model, flash)
        prefill.append(f"| {flash} | {chunks[0]:.0f} ms | {chunks[8]:.0f} ms | "
                       f"{chunks[17]:.0f} ms | {chunks[17] / chunks[0]:.2f}x |")
    model.close()
    body = (f"## llama.cpp alone (`bench/kernels.py`)\n\n{common.machine()}. One llama_decode "
            f"of b sessions' next tokens (ms), each session holding `history` tokens:\n\n"
            + "\n".join(rows) + "\n\nOne 40-token prompt chunk as the context grows (a chat "
            "turn's new tokens):\n\n" + "\n".join(prefill) + "\n")
    common.publish("kernels", body, write=not args.no_write)


if __name__ == "__main__":
    main()
