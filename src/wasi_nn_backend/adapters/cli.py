"""The wasi-nn-backend command.

    wasi-nn-backend demo                      several sessions at once on a small model
    wasi-nn-backend generate MODEL -p TEXT    one completion (or --chat), optionally streamed
    wasi-nn-backend info MODEL                what a GGUF model is
    wasi-nn-backend run-wasm GUEST.wasm ...   a WebAssembly guest calling wasi_ephemeral_nn
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..backend import Backend
from ..errors import InvalidArgument, WasiNnError

DEMO_PROMPTS = ["The quick brown fox", "Once upon a time", "In the beginning",
                "Hello world", "Beautiful is better than", "Simple is better than"]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except WasiNnError as error:
        print(f"wasi-nn-backend: {error.code.name.lower()}: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasi-nn-backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="serve several sessions at once on a small model")
    demo.add_argument("--model", help="GGUF file (default: a generated tiny test model)")
    demo.add_argument("--sessions", type=int, default=4, help="concurrent sessions (default 4)")
    demo.add_argument("--max-tokens", type=int, default=32, help="tokens per session")
    demo.set_defaults(run=_demo)

    generate = commands.add_parser("generate", help="generate text for one prompt")
    generate.add_argument("model", help="GGUF file")
    generate.add_argument("-p", "--prompt", required=True, help="the prompt (or chat message)")
    generate.add_argument("--config", help="JSON settings, or @FILE to read them from a file")
    generate.add_argument("--chat", action="store_true", help="apply the chat template")
    generate.add_argument("--stream", action="store_true", help="print pieces as they come")
    generate.set_defaults(run=_generate)

    info = commands.add_parser("info", help="describe a GGUF model")
    info.add_argument("model", help="GGUF file")
    info.set_defaults(run=_info)

    wasm = commands.add_parser("run-wasm", help="run a WebAssembly (WASI) guest that calls the "
                               "wasi_ephemeral_nn imports")
    wasm.add_argument("--nn-preload", action="append", default=[], metavar="NAME:GGML:AUTO:PATH",
                      help="a model the guest loads by NAME (repeatable)")
    wasm.add_argument("--dir", action="append", default=[], metavar="HOST:GUEST",
                      help="preopen HOST as GUEST (repeatable; guests may also load_by_name a "
                      "model by its host path inside it)")
    wasm.add_argument("--env", action="append", default=[], metavar="K=V",
                      help="an environment variable for the guest (repeatable)")
    wasm.add_argument("--max-time", type=float, metavar="SECONDS",
                      help="stop the guest after this long (exit status 124)")
    wasm.add_argument("--config", help="backend JSON settings, or @FILE to read them from a file")
    wasm.add_argument("guest", help="the .wasm file (a WASI command)")
    wasm.add_argument("args", nargs=argparse.REMAINDER, help="the guest's arguments")
    wasm.set_defaults(run=_run_wasm)
    return parser


def _read_config(value: str | None) -> str | None:
    if value and value.startswith("@"):
        return Path(value[1:]).read_text()
    return value


def _generate(args: argparse.Namespace) -> int:
    config = _read_config(args.config)
    with Backend({"logging": {"level": "error"}}) as backend:
        session = backend.load(args.model, config).session()
        run = session.chat_stream if args.chat else session.complete_stream
        stream = run(args.prompt)
        if args.stream:
            for piece in stream:
                print(piece, end="", flush=True)
            print()
        else:
            print(stream.result().text)
        completion = stream.result()
        print(json.dumps(completion.usage()), file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    with Backend({"logging": {"level": "error"}}) as backend:
        graph = backend.load(args.model, {"model": {"n_ctx": 256, "n_seq_max": 1}})
        for key, value in graph.info().items():
            text = str(value)
            print(f"{key:14} {text if len(text) < 200 else text[:200] + '...'}")
    return 0


def _run_wasm(args: argparse.Namespace) -> int:
    from .wasm import NnHost, run_guest  # wasmtime loads only for this command
    dirs = [tuple(spec.split(":", 1)) if ":" in spec else (spec, spec) for spec in args.dir]
    env = dict(_key_value(spec) for spec in args.env)
    config = _read_config(args.config) or {"logging": {"level": "error"}}
    with NnHost(config=config, preloads=args.nn_preload,
                allowed_dirs=[host for host, _ in dirs]) as host:
        result = run_guest(args.guest, args.args, host=host, dirs=dirs, env=env,
                           max_time=args.max_time, on_output=_echo)
    if result.trap:
        print(f"wasi-nn-backend: {result.trap.splitlines()[0]}", file=sys.stderr)
    return result.exit_code


def _key_value(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise InvalidArgument(f"--env {spec!r} is not K=V")
    return key, value


def _echo(fd: int, data: bytes) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.buffer.write(data)
    stream.flush()


def _demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or _tiny_model(Path(folder))
        config = {"model": {"n_ctx": 512, "n_seq_max": max(args.sessions, 1)},
                  "logging": {"level": "error"}}
        with Backend(config) as backend:
            graph = backend.load(model)
            print(f"model: {Path(model).name}  sessions: {args.sessions}  "
                  f"(one engine, continuous batching)\n")
            rows = _run_sessions(graph, args.sessions, args.max_tokens)
            steps = graph.engine.counters.steps
    _print_table(rows, steps)
    return 0


def _tiny_model(folder: Path) -> str:
    from .tiny_model import write_tiny_llama  # the gguf package is a test/tool extra
    path = folder / "tiny-demo.gguf"
    write_tiny_llama(path)
    print("no --model given: generated a tiny random-weight llama model (its text is noise)")
    return str(path)


def _run_sessions(graph, count: int, max_tokens: int) -> list[tuple[str, int, float, str]]:
    rows: list[tuple[str, int, float, str]] = [("", 0, 0.0, "")] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        prompt = DEMO_PROMPTS[index % len(DEMO_PROMPTS)]
        with graph.session() as session:
            start.wait()
            began = time.perf_counter()
            done = session.complete(prompt, temperature=0, max_tokens=max_tokens,
                                    ignore_eos=True)
            rows[index] = (prompt, len(done.generated_tokens), time.perf_counter() - began,
                           done.text)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rows


def _print_table(rows: list[tuple[str, int, float, str]], steps: int) -> None:
    for index, (prompt, _, _, text) in enumerate(rows, start=1):
        print(f"[{index}] {prompt!r} -> {text.strip()[:60]!r}")
    print(f"\n{'session':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>8}")
    for index, (_, tokens, seconds, _) in enumerate(rows, start=1):
        print(f"{index:>7} {tokens:>7} {seconds:>8.3f} {tokens / max(seconds, 1e-9):>8.1f}")
    total_tokens = sum(r[1] for r in rows)
    wall = max(r[2] for r in rows)
    print(f"{'total':>7} {total_tokens:>7} {wall:>8.3f} {total_tokens / max(wall, 1e-9):>8.1f}")
    print(f"\n{total_tokens} tokens in {steps} engine steps: sessions decoded together")


if __name__ == "__main__":
    sys.exit(main())
