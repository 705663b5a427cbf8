"""The wasi-nn-backend command.

    wasi-nn-backend demo                      the bundled model recites the Zen of Python, one session per line
    wasi-nn-backend generate MODEL -p TEXT    one completion (or --chat), optionally streamed
    wasi-nn-backend chat MODEL                talk with a model, the conversation kept
    wasi-nn-backend info MODEL                what a GGUF model is, and what loading it takes
    wasi-nn-backend serve MODEL...            an OpenAI-compatible HTTP server (the [server] extra)
    wasi-nn-backend run-wasm GUEST.wasm ...   a WebAssembly guest calling wasi_ephemeral_nn
    wasi-nn-backend erlang-port               the Erlang port program (frames on fds 3 and 4)
    wasi-nn-backend erlang-client [--dest D]  where the Erlang client is (or copy it to D)

The package's log lines go to stderr: warnings and errors by default, -v adds info (-vv
debug), -q keeps only errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..api import Backend
from ..errors import InvalidArgument, WasiNnError
from ..logs import PACKAGE_LOGGER, log_to_stderr
from . import bundled, terminal


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.as_program = argv is None   # the process is ours: run-wasm may end it (_Backstop)
    args.log_level = _log_level(args)
    handler = log_to_stderr(args.log_level)
    try:
        return args.run(args)
    except WasiNnError as error:
        print(f"wasi-nn-backend: {error.code.name.lower()}: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. --config @FILE that cannot be read
        print(f"wasi-nn-backend: {error.strerror or error}: {error.filename or ''}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)


def _log_level(args: argparse.Namespace) -> str | None:
    """The level of the lines printed on stderr (-v / -q), and of the backends the command
    makes. The port program without either follows its backends' logging.level (None)."""
    verbose, quiet = getattr(args, "verbose", 0), getattr(args, "quiet", False)
    if verbose and quiet:
        _parser().error("--verbose and --quiet exclude each other")  # exits with status 2
    if quiet:
        return "error"
    if verbose:
        return "info" if verbose == 1 else "debug"
    return None if args.run is _erlang_port else "warn"


def _program_version() -> str:
    try:
        return version("wasi-nn-backend")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _verbosity() -> argparse.ArgumentParser:
    """-v / -q, accepted before the command and after it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="print the package's info lines on stderr (-vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only errors on stderr (no warnings)")
    return common


def _parser() -> argparse.ArgumentParser:
    common = [_verbosity()]
    parser = argparse.ArgumentParser(prog="wasi-nn-backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=common)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_program_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add = _adder(commands, common)

    demo = add(
        "demo", help="the bundled model recites the Zen of Python, one session per line")
    demo.add_argument("--model", help="GGUF file (default: the bundled zen-demo.gguf)")
    demo.add_argument("--sessions", type=int, default=19,
                      help="concurrent sessions, one per line of the Zen (default: all 19)")
    demo.set_defaults(run=_demo)

    generate = add("generate", help="generate text for one prompt")
    generate.add_argument("model", help="GGUF file")
    generate.add_argument("-p", "--prompt", required=True, help="the prompt (or chat message)")
    generate.add_argument("--config", help="JSON settings, or @FILE to read them from a file")
    generate.add_argument("--chat", action="store_true", help="apply the chat template")
    generate.add_argument("--stream", action="store_true", help="print pieces as they come")
    generate.set_defaults(run=_generate)

    chat = add("chat", help="talk with a model (keeps the conversation)")
    chat.add_argument("model", help="GGUF file")
    chat.add_argument("--config", help="JSON settings, or @FILE to read them from a file")
    chat.add_argument("--system", help="a system prompt")
    chat.set_defaults(run=_chat)

    info = add(
        "info", help="describe a GGUF model: architecture, parameters, context trained, "
        "vocabulary, quantization, chat template, file size, load time, memory needed")
    info.add_argument("model", help="GGUF file")
    info.add_argument("--config", help="JSON load settings (n_ctx, n_seq_max, cache types...) "
                      "or @FILE; the memory shown is for them (default: n_ctx 256, one "
                      "sequence)")
    info.set_defaults(run=_info)

    serve = add("serve", help="an OpenAI-compatible HTTP server (/v1/chat/completions, "
                "/v1/completions, /v1/embeddings, /v1/models) for the models given")
    serve.add_argument("models", nargs="*", metavar="MODEL",
                       help="GGUF file (alias: its stem) or ALIAS:GGML:AUTO:PATH")
    serve.add_argument("--embedding-model", action="append", default=[], metavar="MODEL",
                       help="a model loaded with embedding: true, for /v1/embeddings "
                       "(repeatable)")
    serve.add_argument("--config", help="JSON settings for the backend and every model, or "
                       "@FILE")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY (default: the "
                       "WASI_NN_API_KEY environment variable, else none)")
    serve.add_argument("--pool-size", type=int, metavar="N",
                       help="sessions kept per model (default: max_sessions / models)")
    serve.set_defaults(run=_serve)

    wasm = add("run-wasm", help="run a WebAssembly (WASI) guest that calls the "
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

    port = add(
        "erlang-port", help="the Erlang port program: {packet,4} External Term Format frames on "
        "fds 3 and 4 (open_port with nouse_stdio; docs/erlang-protocol.md)")
    port.set_defaults(run=_erlang_port)

    client = add(
        "erlang-client", help="print the folder holding the Erlang client (a rebar3 project: "
        "src/wasi_nn.erl, src/dev_wasi_nn_nif.erl, the OTP application), its README and the "
        "port protocol, or copy them into --dest")
    client.add_argument("--dest", metavar="DIR", help="copy the files into DIR (created)")
    client.set_defaults(run=_erlang_client)
    return parser


def _adder(commands: argparse._SubParsersAction, common: list[argparse.ArgumentParser]):
    def add(name: str, **kwargs: object) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=common, **kwargs)
    return add


def _backend_config(args: argparse.Namespace) -> dict:
    return {"logging": {"level": args.log_level or "warn"}}


def _read_config(value: str | None) -> str | None:
    if value and value.startswith("@"):
        return Path(value[1:]).read_text()
    return value


def _generate(args: argparse.Namespace) -> int:
    config = _read_config(args.config)
    with Backend(_backend_config(args)) as backend:
        session = terminal.load(backend, args.model, config).session()
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


def _chat(args: argparse.Namespace) -> int:
    with Backend(_backend_config(args)) as backend:
        graph = terminal.load(backend, args.model, _read_config(args.config))
        return terminal.chat(graph, args.system, sys.stdout, sys.stdin)


_INFO_DEFAULTS = {"model": {"n_ctx": 256, "n_seq_max": 1}}


def _info(args: argparse.Namespace) -> int:
    with Backend(_backend_config(args)) as backend:
        config = _read_config(args.config) or _INFO_DEFAULTS
        graph = terminal.load(backend, args.model, config)
        info = graph.info()
        for key in ("handle", "old_models_serving"):
            info.pop(key)
        memory = info.pop("memory")
        template = info.pop("chat_template")
        for key, value in info.items():
            print(f"{key:14} {value}")
        print(f"{'memory_mb':14} {memory['total_mb']} (weights {memory['weights_mb']}, "
              f"KV cache {memory['kv_cache_mb']}, compute {memory['compute_mb']})")
        text = str(template)
        print(f"{'chat_template':14} {text if len(text) < 200 else text[:200] + '...'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .http import load_models, serve  # starlette and uvicorn load only for this command
    from .http.serve import server_config
    if not args.models and not args.embedding_model:
        raise InvalidArgument("serve needs at least one MODEL (or --embedding-model)")
    text = _read_config(args.config)
    try:
        config = json.loads(text) if text else {}
    except RecursionError:
        raise InvalidArgument("--config is not usable JSON: nested too deeply") from None
    except ValueError as error:
        raise InvalidArgument(f"--config is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise InvalidArgument("--config must be a JSON object")
    config = server_config(config)
    backend_config = {**config, "logging": {**config.get("logging", {}),
                                            **_backend_config(args)["logging"]}}
    with Backend(backend_config) as backend:
        models = load_models(backend, args.models, config, args.embedding_model)
        print(f"serving {', '.join(models)} on http://{args.host}:{args.port}/v1",
              file=sys.stderr, flush=True)
        serve(backend, models, host=args.host, port=args.port,
              api_key=args.api_key or os.environ.get("WASI_NN_API_KEY") or None,
              pool_size=args.pool_size,
              log_level="info" if args.log_level in ("info", "debug") else "warning")
    return 0


def _run_wasm(args: argparse.Namespace) -> int:
    from .wasm import NnHost, run_guest  # wasmtime loads only for this command
    from .wasm.deadline import max_time_limit
    dirs = [tuple(spec.split(":", 1)) if ":" in spec else (spec, spec) for spec in args.dir]
    env = dict(_key_value(spec) for spec in args.env)
    config = _read_config(args.config) or _backend_config(args)
    max_time = max_time_limit(args.max_time)
    backstop = _Backstop(max_time) if args.as_program and max_time is not None else None
    try:
        with NnHost(config=config, preloads=args.nn_preload,
                    allowed_dirs=[host for host, _ in dirs]) as host:
            result = run_guest(args.guest, args.args, host=host, dirs=dirs, env=env,
                               max_time=max_time, on_output=_echo,
                               on_expire=backstop.arm if backstop is not None else None)
    finally:
        if backstop is not None:
            backstop.cancel()
    if result.trap:
        print(f"wasi-nn-backend: {result.trap.splitlines()[0]}", file=sys.stderr)
    return result.exit_code


BACKSTOP_GRACE_S = 2.0


class _Backstop:
    """End the process (status 124) if the guest is still running BACKSTOP_GRACE_S after its
    max_time has passed (armed then by run_guest, so loading the preloads and compiling the
    guest do not count). run_guest stops wasm code and cancels requests by itself; this is
    for a host call nothing can interrupt (a WASI sleep in poll_oneoff)."""

    def __init__(self, max_time: float) -> None:
        self.max_time = max_time
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._cancelled = False

    def arm(self) -> None:
        with self._lock:
            if self._cancelled or self._timer is not None:
                return
            self._timer = threading.Timer(BACKSTOP_GRACE_S, self._stop)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._timer is not None:
                self._timer.cancel()

    def _stop(self) -> None:
        print(f"wasi-nn-backend: the guest ran past max_time ({self.max_time} s) and was "
              f"still inside a host call {BACKSTOP_GRACE_S} s later; stopped", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(124)


def _key_value(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise InvalidArgument(f"--env {spec!r} is not K=V")
    return key, value


def _echo(fd: int, data: bytes) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.buffer.write(data)
    stream.flush()


def _erlang_port(args: argparse.Namespace) -> int:
    from .erlang import run  # erlang_py loads only for this command
    return run()


def _erlang_client(args: argparse.Namespace) -> int:
    if args.dest is None:
        print(bundled.erlang_client_dir())
        return 0
    for path in bundled.write_erlang_client(args.dest):
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(args.sessions, args.model, log_level=args.log_level or "warn")


if __name__ == "__main__":
    sys.exit(main())
