"""run_guest and the run-wasm command: what a guest sees (args, env, stdin, preopens), how it
ends (exit code, trap, max_time), model names (aliases vs paths outside the allowed
directories), subsets of imports, and guests that misbehave while others are served."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import wasmtime

from wasi_nn_backend.adapters import cli
from wasi_nn_backend.adapters.wasm import GuestResult, NnHost, run_guest
from wasi_nn_backend.errors import InvalidArgument, InvalidEncoding, NotFound

SUCCESS, RUNTIME_ERROR, NOT_FOUND, MODEL_NOT_FOUND = 0, 5, 8, 103
JOIN_TIMEOUT_S = 60.0
WASI = "wasi_snapshot_preview1"

# A WASI command printing its argv (NUL-separated) to stdout, its environment to stderr,
# and exiting with the number of preopened directories (fd 3, 4, ... until fd_prestat_get
# fails).
ECHO_GUEST = f"""(module
  (import "{WASI}" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "{WASI}" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "{WASI}" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "{WASI}" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "{WASI}" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "{WASI}" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr)) (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $fd i32)
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 20)))
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 1024) (i32.const 8192)))
    (call $write (i32.const 2) (i32.const 8192) (i32.load (i32.const 20)))
    ;; stdin -> stdout
    (i32.store (i32.const 24) (i32.const 16384)) (i32.store (i32.const 28) (i32.const 1024))
    (drop (call $fd_read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 32)))
    (call $write (i32.const 1) (i32.const 16384) (i32.load (i32.const 32)))
    (local.set $fd (i32.const 3))
    (block $done (loop $next
      (br_if $done (call $prestat (local.get $fd) (i32.const 40)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br $next)))
    (call $proc_exit (i32.sub (local.get $fd) (i32.const 3)))))"""

SPIN_GUEST = """(module (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"""

UNREACHABLE_AFTER = "(call $print (i32.const {said}) (i32.const {said_len})) unreachable"


def describe(result: GuestResult) -> str:
    return f"exit={result.exit_code} trap={result.trap!r} stderr={result.stderr[:300]!r}"


# -- what the guest sees -----------------------------------------------------------------------
def test_argv_env_stdin_and_preopens(nn_host, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = run_guest(ECHO_GUEST.encode(), ["one", "two words"], host=nn_host,
                       env={"KEY": "value", "EMPTY": ""}, stdin=b"from stdin",
                       dirs=[(str(tmp_path / "a"), "/data"), (str(tmp_path / "b"), "/b")])
    assert result.trap is None and result.exit_code == 2, describe(result)
    assert result.stdout == b"guest.wasm\0one\0two words\0from stdin"
    assert result.stderr == b"KEY=value\0EMPTY=\0"


def test_by_default_a_guest_gets_nothing_of_the_host(nn_host, tmp_path):
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(ECHO_GUEST))
    result = run_guest(wasm, host=nn_host)
    assert result.trap is None and result.exit_code == 0, describe(result)  # no preopens
    assert result.stdout == b"echo.wasm\0"        # argv[0] is the file name; stdin is empty
    assert result.stderr == b""                   # no environment inherited


def test_guests_that_cannot_start_raise(nn_host, tmp_path):
    with pytest.raises(NotFound):
        run_guest(tmp_path / "missing.wasm", host=nn_host)
    with pytest.raises(InvalidEncoding):
        run_guest(b"\0asm garbage", host=nn_host)
    with pytest.raises(InvalidArgument, match="no _start"):
        run_guest(b'(module (memory (export "memory") 1))', host=nn_host)
    unknown = (b'(module (import "wasi_ephemeral_nn" "load_by_alias" '
               b'(func (param i32) (result i32))))')
    with pytest.raises(InvalidArgument, match="load_by_alias"):
        run_guest(unknown, host=nn_host)
    with pytest.raises(NotFound):
        run_guest(ECHO_GUEST.encode(), host=nn_host, dirs=[(str(tmp_path / "nope"), "/x")])


# -- imports: any subset -----------------------------------------------------------------------
@pytest.mark.parametrize("imports", [(), ("compute",), ("fini_single", "unload"),
                                     ("load_by_name", "init_execution_context", "set_input",
                                      "compute", "get_output")])
def test_a_guest_importing_a_subset_instantiates(nn_host, wat, imports):
    body = "(call $rec (call $compute (i32.const 7)))" if "compute" in imports else ""
    run = wat.run(body, imports=imports, host=nn_host)
    assert run.values == ([NOT_FOUND] if body else [])


def test_a_subset_guest_does_the_whole_chat(nn_host, wat, expected_text):
    imports = ("load_by_name", "init_execution_context", "set_input", "compute", "get_output")
    run = wat.run(wat.CHAT, wat.CHAT_DATA, imports=imports, host=nn_host)
    assert run.values == [SUCCESS] * 6
    assert run.stdout == expected_text


# -- how guests end ----------------------------------------------------------------------------
@pytest.mark.parametrize("body, exit_code", [
    ("", 0), ("(call $proc_exit (i32.const 0))", 0), ("(call $proc_exit (i32.const 7))", 7),
    ("(call $proc_exit (i32.const 125))", 125),
])
def test_exit_codes(nn_host, wat, body, exit_code):
    result = run_guest(wat.guest(body).text.encode(), host=nn_host)
    assert result.trap is None and result.exit_code == exit_code, describe(result)


def test_an_exit_status_wasi_cannot_carry_ends_as_a_trap(nn_host, wat):
    result = run_guest(wat.guest("(call $proc_exit (i32.const 200))").text.encode(),
                       host=nn_host)
    assert result.exit_code == 134 and "exit status" in result.trap


def test_a_start_function_that_exits_or_traps_ends_the_guest(nn_host):
    exits = (b'(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
             b' (memory (export "memory") 1) (func $init (call $exit (i32.const 5)))'
             b' (start $init) (func (export "_start") unreachable))')
    traps = (b'(module (memory (export "memory") 1) (func $init unreachable) (start $init)'
             b' (func (export "_start")))')
    exited, trapped = run_guest(exits, host=nn_host), run_guest(traps, host=nn_host)
    assert (exited.exit_code, exited.trap) == (5, None)
    assert trapped.exit_code == 134 and "unreachable" in trapped.trap


def test_a_trap_keeps_the_output_and_frees_the_guests_sessions(nn_host, wat):
    body = "\n".join([wat.LOAD_DEFAULT, wat.NEW_CONTEXT, wat.SET_PROMPT, UNREACHABLE_AFTER])
    guest = wat.guest(body, {**wat.CHAT_DATA, "said": b"before the trap\n"})
    result = run_guest(guest.text.encode(), host=nn_host)

    assert result.exit_code == 134, describe(result)
    assert result.trap.splitlines()[0] == "wasm trap: wasm `unreachable` instruction executed"
    assert result.stdout == b"before the trap\n"
    assert nn_host.backend.stats().sessions == 0


def test_max_time_stops_a_spinning_guest_while_another_is_served(nn_host, wat, expected_text):
    results: dict[str, GuestResult] = {}
    spinning = threading.Event()

    def spin() -> None:
        spinning.set()
        results["spin"] = run_guest(SPIN_GUEST.encode(), host=nn_host, max_time=0.3)

    def chat() -> None:
        spinning.wait(JOIN_TIMEOUT_S)
        body = "\n".join([wat.CHAT, "(call $proc_exit (i32.const 0))"])
        results["chat"] = run_guest(wat.guest(body, wat.CHAT_DATA).text.encode(),
                                    host=nn_host)

    threads = [threading.Thread(target=spin, daemon=True),
               threading.Thread(target=chat, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()

    assert results["spin"].exit_code == 124, describe(results["spin"])
    assert "max_time" in results["spin"].trap
    assert results["chat"].trap is None and results["chat"].exit_code == 0
    assert results["chat"].stdout == expected_text
    again = run_guest(wat.guest(wat.CHAT, wat.CHAT_DATA).text.encode(), host=nn_host,
                      max_time=JOIN_TIMEOUT_S)
    assert again.trap is None and again.stdout == expected_text


def test_max_time_must_be_positive(nn_host):
    with pytest.raises(InvalidArgument):
        run_guest(SPIN_GUEST.encode(), host=nn_host, max_time=0)


# -- model names -------------------------------------------------------------------------------
LOAD_NAME = ("(call $rec (call $load_by_name (i32.const {name}) (i32.const {name_len}) "
             "(i32.const {GRAPH})))")


def _load_codes(wat, host: NnHost, *names: str | bytes) -> list[int]:
    values = []
    for name in names:
        raw = name if isinstance(name, bytes) else name.encode()
        values += wat.run(LOAD_NAME, {"name": raw}, host=host).values
    return values


def test_aliases_and_paths_inside_allowed_dirs(tiny_model_path, wat, tmp_path):
    model = Path(tiny_model_path).read_bytes()
    allowed, outside = tmp_path / "allowed", tmp_path / "outside.gguf"
    allowed.mkdir()
    (allowed / "model.gguf").write_bytes(model)
    outside.write_bytes(model)
    (allowed / "link.gguf").symlink_to(outside)
    with NnHost(config=wat.HOST_CONFIG, preloads=[f"tiny:ggml:auto:{tiny_model_path}"],
                allowed_dirs=[str(allowed)]) as host:
        codes = _load_codes(wat, host, "tiny", str(allowed / "model.gguf"),
                            str(allowed / "missing.gguf"), str(outside),
                            str(allowed / "link.gguf"), str(allowed / ".." / "outside.gguf"),
                            str(allowed), tiny_model_path, "unknown-alias")
    # security (witx runtime_error) for everything outside the allowed directory
    assert codes == [SUCCESS, SUCCESS, MODEL_NOT_FOUND] + [RUNTIME_ERROR] * 6


def test_without_allowed_dirs_only_aliases_load(tiny_model_path, wat):
    with NnHost(config=wat.HOST_CONFIG,
                preloads=[f"tiny:GGML:CPU:{tiny_model_path}"]) as host:
        codes = _load_codes(wat, host, "tiny", tiny_model_path, b"tiny\0", "preload:tiny")
    assert codes == [SUCCESS, NOT_FOUND, SUCCESS, NOT_FOUND]


def test_preload_builder_obeys_the_same_rule(tiny_model_path, wat):
    body = ("(i32.store (i32.const {BUILDERS}) (i32.const {name}))"
            "(i32.store (i32.const {BUILDERS_4}) (i32.const {name_len}))"
            "(call $rec (call $load (i32.const {BUILDERS}) (i32.const 1) (i32.const 6)"
            " (i32.const 0) (i32.const {GRAPH})))")
    with NnHost(config=wat.HOST_CONFIG, preloads=[f"tiny:GGML:AUTO:{tiny_model_path}"]) as host:
        codes = [wat.run(body, {"name": f"preload:{name}".encode()}, host=host).values[0]
                 for name in ("tiny", tiny_model_path)]
    assert codes == [SUCCESS, NOT_FOUND]


@pytest.mark.parametrize("spec", ["tiny:GGML:AUTO", "tiny:ONNX:AUTO:/m.gguf",
                                  "tiny:GGML:NPU:/m.gguf", ":GGML:AUTO:/m.gguf"])
def test_bad_preload_specs_are_refused(spec):
    with pytest.raises(InvalidArgument):
        NnHost(preloads=[spec])


def test_preload_path_may_contain_colons(wat):
    with NnHost(config=wat.HOST_CONFIG, preloads=["m:GGML:AUTO:C:/no/such:model.gguf"]) as host:
        assert _load_codes(wat, host, "m") == [MODEL_NOT_FOUND]


def test_the_preloaded_graph_is_shared_and_stays_warm(nn_host, wat):
    wat.run(wat.LOAD_DEFAULT, {"alias": b"default"}, host=nn_host)
    graphs_after_one = nn_host.backend.stats().graphs
    for _ in range(2):
        wat.run(wat.LOAD_DEFAULT + wat.LOAD_DEFAULT, {"alias": b"default"}, host=nn_host)
    assert nn_host.backend.stats().graphs == graphs_after_one
    assert nn_host.backend.stats().sessions == 0


# -- the run-wasm command ----------------------------------------------------------------------
def test_cli_run_wasm(tiny_model_path, wat, tmp_path, capfd, expected_text):
    guest = tmp_path / "chat.wasm"
    body = "\n".join([wat.CHAT, "(call $proc_exit (i32.const 3))"])
    guest.write_bytes(wasmtime.wat2wasm(wat.guest(body, wat.CHAT_DATA).text))
    config = '{"logging": {"level": "error"}, "model": {"n_ctx": 256, "threads": 1}}'
    code = cli.main(["run-wasm", "--nn-preload", f"default:GGML:AUTO:{tiny_model_path}",
                     "--config", config, "--max-time", "60", str(guest), "--not-an-option"])
    out = capfd.readouterr()
    assert code == 3 and out.out.encode() == expected_text


def test_cli_run_wasm_passes_args_env_dirs_and_reports_traps(tmp_path, capfd):
    echo = tmp_path / "echo.wasm"
    echo.write_bytes(wasmtime.wat2wasm(ECHO_GUEST))
    code = cli.main(["run-wasm", "--dir", f"{tmp_path}:/work", "--dir", str(tmp_path),
                     "--env", "A=1=2", str(echo), "x", "-y"])
    out = capfd.readouterr()
    assert code == 2 and out.out == "echo.wasm\0x\0-y\0" and out.err == "A=1=2\0"

    spin = tmp_path / "spin.wasm"
    spin.write_bytes(wasmtime.wat2wasm(SPIN_GUEST))
    assert cli.main(["run-wasm", "--max-time", "0.2", str(spin)]) == 124
    assert "max_time" in capfd.readouterr().err

    assert cli.main(["run-wasm", "--nn-preload", "bad", str(spin)]) == 2
    assert capfd.readouterr().err.count("\n") == 1
    assert cli.main(["run-wasm", "--env", "novalue", str(spin)]) == 2
