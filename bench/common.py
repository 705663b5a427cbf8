"""Shared by the bench scripts: the model, the two contenders' settings, timing statistics and
the sections of bench/RESULTS.md (each script rewrites only its own section)."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "RESULTS.md"
THREADS = 2


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between ranks; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Timeline:
    """When a request was sent and when each of its tokens (text pieces) arrived."""
    sent: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.sent

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


def run_threads(work: list, target) -> float:
    """Run ``target(item)`` for every item on its own thread, all released at once; the wall
    seconds from the release to the last one's end."""
    start = threading.Barrier(len(work) + 1)

    def body(item) -> None:
        start.wait()
        target(item)
    threads = [threading.Thread(target=body, args=(item,)) for item in work]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def worker(script: str, *args: str) -> object:
    """Run ``script --worker ARGS`` in a fresh Python process and return the JSON it prints
    last. Each contender runs in a process of its own: llama.cpp's OpenMP thread teams belong
    to the thread that calls llama_decode, and teams left by other threads in the same process
    slow the next caller down (measured: 91 -> 67 tokens/s)."""
    out = subprocess.run([sys.executable, str(HERE / script), "--worker", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def llama_tools(*targets: str) -> Path:
    """The bin/ folder of llama.cpp's CPU build from the sources the bindings were built from
    (build_llama_bench.sh), with ``targets`` (llama-batched-bench, llama-server) built too."""
    binary = Path(subprocess.run(["bash", str(HERE / "build_llama_bench.sh")], check=True,
                                 capture_output=True, text=True).stdout.strip())
    for target in targets:
        if not (binary.parent / target).exists():
            subprocess.run(["cmake", "--build", str(binary.parent.parent), "--target", target,
                            "-j", "2"], check=True, capture_output=True)
    return binary.parent


def batched_bench(bin_dir: Path, path: str, counts: list[int], prompt: int, tokens: int,
                  n_ctx: int, *extra: str) -> dict[int, dict]:
    """llama-batched-bench's row for each count of sequences (jsonl: t_pp, speed_pp, t_tg,
    speed_tg, t, speed), in one process: a context of max(counts) sequences of ``n_ctx``
    cells each, each with its own KV stream, flash attention on, ``prompt`` tokens prefilled
    per sequence then ``tokens`` decoded."""
    command = [str(bin_dir / "llama-batched-bench"), "-m", path, "-c", str(n_ctx * max(counts)),
               "-b", "2048", "-ub", "512", "-npp", str(prompt), "-ntg", str(tokens),
               "-npl", ",".join(map(str, counts)), "-fa", "on", "--output-format", "jsonl",
               *extra]
    for _ in range(2):   # once it printed nothing at all (exit 0): a second try
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        rows = [json.loads(line[line.index("{"):])
                for line in (out.stdout + out.stderr).splitlines() if '"speed_tg"' in line]
        found = {row["pl"]: row for row in rows}
        if set(found) == set(counts):
            break
    if set(found) != set(counts):
        raise RuntimeError(f"llama-batched-bench printed {sorted(found)}, not {counts}: "
                           f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return found


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{THREADS} threads")


def write_section(name: str, body: str) -> None:
    """Replace (or append) this script's section of RESULTS.md."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def publish(name: str, body: str, write: bool = True) -> None:
    """Print a script's section and, unless told not to, put it in RESULTS.md."""
    print(body)
    if write:
        write_section(name, body)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"
