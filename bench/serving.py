"""The HTTP server (issue 18) against llama-server from the same llama.cpp: OpenAI-compatible
streamed chat completions, the same client, prompts and settings for both, on two models: the
bench model (bench/make_model.py, Q8_0, 250M), whose decode takes nearly all of these two
cores, and a cheap one (bench/scale.py's 32k-vocabulary tiny model), where the servers' own
work per token weighs as it does next to a GPU's decode.

* Concurrency: 1 / 8 / 16 clients at once, each sending REQUESTS streamed requests one after
  the other (greedy, max_tokens 64, a prompt of its own): aggregate tokens/s (completion
  tokens of every request / wall seconds from the release to the last one's end, prefill
  included) and time to first token (TTFT, p50 / p95 over every request). Beside them, the C++
  reference: llama-batched-bench doing the same work with no server (reference()), and the
  share of the wall time our engine spent inside llama_decode.
* Multi-turn: CONVERSATIONS stateless clients at once, each holding a 10-turn chat and sending
  the whole conversation every turn (replies of 32 tokens): TTFT of turn 1 and turn 10, and
  the prompt tokens prefilled. A server that keeps a conversation's KV cache prefills only the
  new turn.
* A burst: 16 new conversations at once whose prompts start with the same ~600-token system
  prompt no session has seen.

Both servers get max(clients) parallel sequences of N_CTX cells each (ours: that many sessions
in its pool, and as many requests generating at once, max_concurrent) and THREADS threads; each
runs in its own process, started afresh for each round; the two alternate (round 2 starts
with the one round 1 ended with), and each figure is the best of the rounds. The client is the
standard library's http.client (one connection per request, server-sent events read line by
line), run on threads in this process.

Not bench/http.py: a file named http.py in bench/ would shadow the standard library's http
package for every script run from here (gpu.py's http.client, urllib.request).

Run: .venv/bin/python bench/serving.py [--rounds 2] [--models bench,cheap]
         [--only llama-server|ours] [--no-write]
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import common
from common import THREADS, percentile, publish, verdict

HERE = Path(__file__).resolve().parent
LLAMA_BIN = HERE / ".llama-bench" / "build" / "bin"
CLIENTS = (1, 8, 16)
REQUESTS = 2           # per client and concurrency level
TOKENS = 64
TURNS = 10
CONVERSATIONS = 4
REPLY = 32
N_CTX = 1024           # per sequence: ten turns of ~60 tokens fit
SYSTEM = "You are a helpful assistant."
# the burst: a system prompt of ~400 tokens every client's conversation starts with
LONG_SYSTEM = SYSTEM + " " + " ".join(f"Rule {i}: be kind to the little cat and the dog."
                                      for i in range(32))
WORDS = "tell me what the little cat and the dog did when the sun was up and the water was long"


# -- the servers -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until GET /health answers 200 (llama-server's and ours); RuntimeError if the process
    ends first or it takes longer than ``timeout`` seconds."""
    deadline = time.time() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was up")
        if time.time() > deadline:
            raise RuntimeError(f"the server was not up after {timeout:.0f} s")
        time.sleep(0.5)   # waiting for another process's port: nothing to wait on


@contextlib.contextmanager
def launched(command: list[str], port: int, log: Path | None = None
             ) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends; its output to ``log`` (or nowhere)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def llama_server_command(bin_dir: Path, path: str, port: int, sequences: int, n_ctx: int,
                         threads: int, *extra: str) -> list[str]:
    """llama-server with ``sequences`` slots of ``n_ctx`` cells each (gpu.py's too)."""
    return [str(bin_dir / "llama-server"), "-m", path, "-np", str(sequences),
            "-c", str(n_ctx * sequences), "-t", str(threads), "--port", str(port),
            "--host", "127.0.0.1", *extra]


def ours_command(path: str, port: int, sequences: int, n_ctx: int, threads: int) -> list[str]:
    exe = shutil.which("wasi-nn-backend", path=str(Path(sys.executable).parent)) \
        or "wasi-nn-backend"
    config = {"model": {"n_ctx": n_ctx, "n_seq_max": sequences, "threads": threads},
              "backend": {"max_sessions": sequences, "max_concurrent": sequences}}
    return [exe, "serve", f"bench:GGML:AUTO:{path}", "--host", "127.0.0.1", "--port",
            str(port), "--pool-size", str(sequences), "--config", json.dumps(config)]


# -- the client --------------------------------------------------------------------------------
@dataclass
class Reply:
    ttft: float
    tokens: int
    text: str
    prefilled: int | None = None   # prompt tokens less the cached ones (the server's usage)
    prompt: int | None = None      # prompt tokens (the server's usage)


def stream_chat(port: int, messages: list[dict[str, str]], max_tokens: int) -> Reply:
    """One streamed /v1/chat/completions, greedy. Tokens: the usage's completion_tokens when
    the server sends it, else the pieces with text."""
    body = {"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    sent = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    first, pieces, usage, text, prefilled, prompt = None, 0, None, [], None, None
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        choices = event.get("choices") or []
        content = (choices[0].get("delta") or {}).get("content") if choices else None
        if content:
            if first is None:
                first = time.perf_counter()
            pieces += 1
            text.append(content)
        if event.get("usage"):
            usage = event["usage"].get("completion_tokens")
            prompt = event["usage"].get("prompt_tokens")
            cached = (event["usage"].get("prompt_tokens_details") or {}).get("cached_tokens")
            if cached is not None:
                prefilled = event["usage"]["prompt_tokens"] - cached
    conn.close()
    if first is None:
        raise RuntimeError("the stream had no text")
    return Reply(first - sent, usage if usage is not None else pieces, "".join(text), prefilled,
                 prompt)


def decode_seconds(port: int) -> float | None:
    """Seconds our server's engines spent inside llama_decode so far (GET /server/stats);
    None from a server without that route (llama-server)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/server/stats")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        return None
    engines = json.loads(body)["backend"]["engines"].values()
    return sum(engine["decode_seconds"] for engine in engines)


def concurrency(port: int, clients: int, tag: str, system: str = SYSTEM) -> dict[str, float]:
    """``clients`` at once, each sending REQUESTS requests one after the other; ``system``
    starts every conversation."""
    replies: list[Reply] = []
    waves: list[list[int]] = [[] for _ in range(REQUESTS)]   # prefilled tokens per round
    prompts: list[int] = []                                   # prompt tokens, first requests
    lock = threading.Lock()

    def client(i: int) -> None:
        for r in range(REQUESTS):
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": f"{tag}.{clients}.{i}.{r}: {WORDS}"}]
            reply = stream_chat(port, messages, TOKENS)
            with lock:
                replies.append(reply)
                if reply.prefilled is not None:
                    waves[r].append(reply.prefilled)
                if r == 0 and reply.prompt is not None:
                    prompts.append(reply.prompt)
    decoding = decode_seconds(port)
    wall = common.run_threads(list(range(clients)), client)
    ttfts = [r.ttft for r in replies]
    figures = {"tokens_per_s": sum(r.tokens for r in replies) / wall,
               "ttft_p50": percentile(ttfts, 50), "ttft_p95": percentile(ttfts, 95),
               "tokens": sum(r.tokens for r in replies) / len(replies)}
    for r, wave in enumerate(waves):
        if wave:
            figures[f"prefilled{r}"] = percentile(wave, 50)
    if prompts:
        figures["prompt0"] = percentile(prompts, 50)
    if decoding is not None:   # the share of the wall time the engine spent in llama_decode
        figures["in_decode"] = (decode_seconds(port) - decoding) / wall
    return figures


def reference(path: str, ours: dict[str, dict[str, float]]) -> dict[str, float]:
    """What llama.cpp itself does with the same work, no server around it: for each
    concurrency, llama-batched-bench on each round of requests (every client's r-th request
    at once: its prefilled tokens, as our server's usage counted them, then TOKENS decoded,
    all sequences batched), the rounds' times added. Completion tokens / that time is the
    C++ reference a server's tokens/s is set against: a server gets past it only by
    prefilling less (mixed prefill and decode batches can gain a little)."""
    bin_dir = common.llama_tools("llama-batched-bench")
    out = {}
    for n in CLIENTS:
        figures = ours[f"c{n}"]
        seconds = 0.0
        for r in range(REQUESTS):
            prefilled = max(1, round(figures[f"prefilled{r}"]))
            row = common.batched_bench(bin_dir, path, [n], prefilled, TOKENS, N_CTX,
                                       "-t", str(THREADS))[n]
            seconds += row["t"]
        out[f"c{n}"] = n * REQUESTS * figures["tokens"] / seconds
    return out


def multiturn(port: int, conversations: int, tag: str) -> dict[str, float]:
    """Turn k's TTFT, the median over the conversations (all at once, turn by turn each), and
    how many prompt tokens turns 1 and 10 had and prefilled (the server's usage)."""
    replies: list[list[Reply]] = [[] for _ in range(TURNS)]
    lock = threading.Lock()

    def client(c: int) -> None:
        messages = [{"role": "system", "content": f"{tag} conversation {c}. {SYSTEM}"}]
        for turn in range(TURNS):
            messages.append({"role": "user", "content": f"Question {turn}: {WORDS}"})
            reply = stream_chat(port, messages, REPLY)
            messages.append({"role": "assistant", "content": reply.text})
            with lock:
                replies[turn].append(reply)
    common.run_threads(list(range(conversations)), client)
    figures = {}
    for name, turn in (("turn1", replies[0]), ("turn10", replies[-1])):
        figures[name] = percentile([r.ttft for r in turn], 50)
        if all(r.prompt is not None and r.prefilled is not None for r in turn):
            figures[f"{name}_prompt"] = percentile([r.prompt for r in turn], 50)
            figures[f"{name}_prefilled"] = percentile([r.prefilled for r in turn], 50)
    return figures


def measure(name: str, path: str, tag: str, logs: Path) -> dict[str, dict[str, float]]:
    """One round of one contender: a fresh server, every concurrency level, the chats."""
    port, sequences = free_port(), max(CLIENTS)
    if name == "llama-server":
        command = llama_server_command(LLAMA_BIN, path, port, sequences, N_CTX, THREADS)
    else:
        command = ours_command(path, port, sequences, N_CTX, THREADS)
    with launched(command, port, logs / f"{name}-{tag}.log"):
        stream_chat(port, [{"role": "user", "content": f"warm-up {tag}"}], 8)
        figures = {f"c{n}": concurrency(port, n, tag) for n in CLIENTS}
        figures["multiturn"] = multiturn(port, CONVERSATIONS, tag)
        # a system prompt no session has seen yet (the round's tag first), max(CLIENTS) new
        # conversations at once
        figures["burst"] = concurrency(port, max(CLIENTS), tag, f"{tag}. {LONG_SYSTEM}")
    print(f"{name} round {tag}: " + json.dumps(figures), file=sys.stderr, flush=True)
    return figures


def best(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each figure's best over the rounds (most tokens/s, least seconds)."""
    out: dict[str, dict[str, float]] = {}
    for key in rounds[0]:
        out[key] = {}
        fastest = max(rounds, key=lambda r: r[key].get("tokens_per_s", 0.0))
        for figure in rounds[0][key]:
            values = [r[key][figure] for r in rounds]
            if figure == "in_decode":   # a description of the best round, not a score
                out[key][figure] = fastest[key][figure]
            else:
                out[key][figure] = max(values) if figure in ("tokens_per_s", "tokens") \
                    else min(values)
    return out


MODELS = {   # name -> (how the report names it, its path)
    "bench": ("`bench/make_model.py` (Q8_0, 250M)", "make_model"),
    "cheap": ("`bench/scale.py`'s 32k-vocabulary tiny model (F32): a decode that costs "
              "little next to the servers' own work per token, as on a GPU", "scale"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=("llama-server", "ours"))
    parser.add_argument("--models", default="bench,cheap",
                        help="which models, of: " + ", ".join(MODELS))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "wnb-serving-logs"
    logs.mkdir(parents=True, exist_ok=True)
    names = [args.only] if args.only else ["llama-server", "ours"]
    everything, sections = {}, []
    for key in args.models.split(","):
        described, module = MODELS[key]
        path = __import__(module).model_path()
        rounds: dict[str, list] = {name: [] for name in names}
        load = os.getloadavg()[0]   # other work on the machine distorts every figure
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                rounds[name].append(measure(name, path, f"{key}{r}", logs))
        results = {name: best(rs) for name, rs in rounds.items()}
        results["load"] = {"before": load}
        everything[key] = {"best": results, "rounds": rounds}
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "serving.json").write_text(json.dumps(everything, indent=1))
        if "ours" in results:
            try:
                results["reference"] = reference(path, results["ours"])
            except (RuntimeError, subprocess.CalledProcessError) as error:
                print(f"no C++ reference for {key}: {error}", file=sys.stderr)
        sections.append(report(results, described, first=not sections))
    (HERE / "results" / "serving.json").write_text(json.dumps(everything, indent=1))
    publish("http", "\n".join(sections), write=not args.no_write and args.only is None)


def report(results: dict[str, dict[str, dict[str, float]]], model: str, first: bool) -> str:
    ours, theirs = results.get("ours"), results.get("llama-server")
    title = "## HTTP server vs llama-server (`bench/serving.py`)" if first \
        else "### The same with a cheap decode"
    lines = [f"{title}\n",
             f"{common.machine()}; model {model}. OpenAI streamed "
             f"chat completions, greedy, {TOKENS} tokens, {REQUESTS} requests per client one "
             f"after the other; both servers with {max(CLIENTS)} sequences of {N_CTX} cells "
             "and their default flash attention, each in its own process, alternating, best "
             "of the rounds. Tokens/s: every request's completion tokens / wall seconds "
             f"(prefill included). TTFT over every request. Load average (1 min) before the "
             f"run: {results['load']['before']:.2f}.\n",
             "| clients | contender | tokens/s | share of the C++ reference | TTFT p50 | "
             "TTFT p95 |", "|---|---|---|---|---|---|"]
    ref = results.get("reference")
    for n in CLIENTS:
        for name, figures in (("llama-server", theirs), ("ours", ours)):
            if figures is None:
                continue
            f = figures[f"c{n}"]
            ratio = f" ({f['tokens_per_s'] / theirs[f'c{n}']['tokens_per_s']:.2f}x)" \
                if name == "ours" and theirs else ""
            share = f"{f['tokens_per_s'] / ref[f'c{n}']:.0%}" if ref else "-"
            lines.append(f"| {n} | {name} | {f['tokens_per_s']:.1f}{ratio} | {share} | "
                         f"{f['ttft_p50'] * 1000:.0f} ms | {f['ttft_p95'] * 1000:.0f} ms |")
    if ref:
        lines += ["", "The C++ reference: llama-batched-bench from the same build doing the "
                  "same work with no server around it (each round of requests as one batch: "
                  "the tokens each request prefilled, then its completion tokens), "
                  + ", ".join(f"{ref[f'c{n}']:.1f}" for n in CLIENTS)
                  + f" tokens/s at {' / '.join(map(str, CLIENTS))} clients."]
    if ours and "in_decode" in ours[f"c{max(CLIENTS)}"]:
        lines += ["", "Share of the wall time our server's engine spent inside llama_decode "
                  "(its /server/stats): " + ", ".join(
                      f"{ours[f'c{n}']['in_decode']:.0%}" for n in CLIENTS)
                  + f" at {' / '.join(map(str, CLIENTS))} clients. The rest is the engine's "
                  "Python (planning, sampling, text) and the waits between requests; "
                  "everything else the process does (HTTP, JSON, the event loop) runs while "
                  "llama_decode computes, on the same two cores as it and the client."]
    if ours and "burst" in ours:
        top = max(CLIENTS)
        lines += ["", f"A burst: {top} clients start at once, every conversation with the same "
                  f"system prompt that no session has seen (prompts of "
                  f"{ours['burst']['prompt0']:.0f} tokens), then as above (2 requests each, 64 "
                  "tokens). Ours prefills that prompt once and copies it to the other "
                  "sessions (memory.enable_token_cache_reuse); llama-server prefills it in "
                  "every slot.\n",
                  "| contender | tokens/s | TTFT p50 | TTFT p95 | prompt tokens prefilled, "
                  "median of the first requests |", "|---|---|---|---|---|"]
        for name, figures in (("llama-server", theirs), ("ours", ours)):
            if figures is None or "burst" not in figures:
                continue
            b = figures["burst"]
            ratio = f" ({b['tokens_per_s'] / theirs['burst']['tokens_per_s']:.2f}x)" \
                if name == "ours" and theirs else ""
            lines.append(f"| {name} | {b['tokens_per_s']:.1f}{ratio} | "
                         f"{b['ttft_p50'] * 1000:.0f} ms | {b['ttft_p95'] * 1000:.0f} ms | "
                         f"{b.get('prefilled0', float('nan')):.0f} |")
    lines += ["", f"Multi-turn, stateless: {CONVERSATIONS} chats at once, the whole conversation "
              f"sent each turn, {REPLY}-token replies; TTFT median over the chats, each "
              "figure the best of the rounds (one turn-10 request per chat a round: noisy; "
              "the prefilled tokens say what was reused).\n",
              "| contender | turn 1 | turn 10 | turn 10 / turn 1 | turn 10's prompt tokens: "
              "all / prefilled |", "|---|---|---|---|---|"]
    for name, figures in (("llama-server", theirs), ("ours", ours)):
        if figures is None:
            continue
        m = figures["multiturn"]
        tokens = f"{m['turn10_prompt']:.0f} / {m['turn10_prefilled']:.0f}" \
            if "turn10_prefilled" in m else "-"
        lines.append(f"| {name} | {m['turn1'] * 1000:.0f} ms | {m['turn10'] * 1000:.0f} ms | "
                     f"{m['turn10'] / m['turn1']:.2f} | {tokens} |")
    if ours and theirs:
        ratios = {n: ours[f"c{n}"]["tokens_per_s"] / theirs[f"c{n}"]["tokens_per_s"]
                  for n in CLIENTS}
        top = max(CLIENTS)
        lines += ["", f"Targets: >= 1.0x llama-server's tokens/s at every concurrency: "
                  f"{verdict(min(ratios.values()) >= 1.0)} "
                  f"({', '.join(f'{r:.2f}x' for r in ratios.values())}); >= 1.2x at "
                  f"{top}: {verdict(ratios[top] >= 1.2)}."]
        if ref:
            ceiling = ref[f"c{top}"] / theirs[f"c{top}"]["tokens_per_s"]
            lines[-1] += (f" At {top} clients llama-server reaches "
                          f"{1 / ceiling:.0%} of the C++ reference: a server doing the same "
                          f"work can be at most about {ceiling:.2f}x llama-server here.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
