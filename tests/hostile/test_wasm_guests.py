"""Hostile WebAssembly guests against one NnHost: every call they make gets its witx code, the
host keeps serving (a plain guest after each test gets its tokens, and no session is left
behind), and nothing outside the allowed model directory is opened (an audit hook sees every
file Python opens; the model header is read in Python before llama.cpp sees a path).

A representative set of what the attackers ran: out-of-bounds pointers and lengths, lengths
that wrap 2^32, huge tensor dimensions, a 16 MiB prompt, metadata that asks for no deadline or
huge max_tokens, model paths outside --dir (``..``, absolute, a symlink out of it, a WASI
path_open out of a preopen), too-small or out-of-range output buffers, handles never issued,
double finalize / unload, a guest looping on compute, a guest trapping mid-generation, and a
load config that once aborted llama.cpp (run in a child process).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters" / "wasm"))
from wat_harness import (CHAT, CHAT_DATA, COMPUTE, HOST_CONFIG, LOAD_DEFAULT,  # noqa: E402
                         NEW_CONTEXT, SET_METADATA, SET_PROMPT, decode_values, run_wat,
                         wat_guest)

from wasi_nn_backend.adapters.wasm import NnHost, run_guest  # noqa: E402

SUCCESS, INVALID_ARGUMENT, RUNTIME_ERROR, TOO_LARGE, NOT_FOUND = 0, 1, 5, 7, 8
PROMPT_TOO_LONG = 102
TRAP_EXIT_CODE, TIMEOUT_EXIT_CODE = 134, 124
OPERATOR_MS = 1000       # the host's default_task_timeout_ms
BOUND_S = 30.0           # generous, for a loaded 2-core CI machine
MIB = 1 << 20

# $tensor(dims_ptr, dims_len, data_ptr, data_len) -> the address of a U8 tensor record.
TENSOR_HELPER = """
  (func $tensor (param $dims i32) (param $n i32) (param $data i32) (param $len i32) (result i32)
    (i32.store (i32.const {TENSOR}) (local.get $dims))
    (i32.store (i32.const {TENSOR_4}) (local.get $n))
    (i32.store (i32.const {TENSOR_8}) (i32.const 3))
    (i32.store (i32.const {TENSOR_12}) (local.get $data))
    (i32.store (i32.const {TENSOR_16}) (local.get $len))
    (i32.const {TENSOR}))"""
CTX = "(i32.load (i32.const {CTX}))"
GRAPH = "(i32.load (i32.const {GRAPH}))"
OPENED: list[str] = []   # files Python opened while a test ran (the audit hook fills it)
_AUDITING = [False]


def _audit(event: str, args: tuple) -> None:
    if _AUDITING[0] and event == "open" and isinstance(args[0], (str, bytes)):
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def places(tiny_model_path, tmp_path_factory):
    """models/ (allowed: the model, and a symlink escaping to outside/) and outside/ (a real
    GGUF file no guest may load)."""
    root = tmp_path_factory.mktemp("hostile-wasm")
    models, outside = root / "models", root / "outside"
    models.mkdir()
    outside.mkdir()
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    shutil.copy(tiny_model_path, outside / "secret.gguf")
    (models / "escape.gguf").symlink_to(outside / "secret.gguf")
    (models / "up").symlink_to(outside)
    return models, outside


@pytest.fixture(scope="module")
def host(places):
    models, _ = places
    config = {**HOST_CONFIG, "backend": {"default_task_timeout_ms": OPERATOR_MS}}
    with NnHost(config=config, preloads=(f"default:GGML:AUTO:{models / 'tiny.gguf'}",),
                allowed_dirs=(str(models),)) as nn_host:
        yield nn_host


@pytest.fixture(autouse=True)
def survives(host, places):
    """After each test: nothing under outside/ was opened, and the host still serves."""
    _, outside = places
    OPENED.clear()
    _AUDITING[0] = True
    yield
    _AUDITING[0] = False
    assert not [path for path in OPENED if str(outside) in path]
    result = run_guest(wat_guest(CHAT, CHAT_DATA).text.encode(), host=host, max_time=BOUND_S)
    assert result.exit_code == 0 and decode_values(result.stderr) == [0] * 6, result
    assert host.backend.stats().sessions == 0


def values_of(host: NnHost, body: str, data: dict | None = None, **kwargs) -> list[int]:
    return run_wat(body, {**CHAT_DATA, **(data or {})}, host=host, extra=TENSOR_HELPER,
                   **kwargs).values


def rec(call: str) -> str:
    return f"(call $rec {call})"


START = "\n".join([LOAD_DEFAULT, NEW_CONTEXT])   # two successes, then the test's calls


# -- guest memory ----------------------------------------------------------------------------
def test_out_of_bounds_pointers_and_lengths(host):
    body = "\n".join([START,
        rec("(call $load_by_name (i32.sub (i32.const {MEM_END}) (i32.const 2)) (i32.const 8)"
            " (i32.const {GRAPH2}))"),
        rec("(call $load_by_name (i32.const {alias}) (i32.const {alias_len})"
            " (i32.const 0xFFFFFFFC))"),
        rec(f"(call $set_input {CTX} (i32.const 0) (i32.const 0xFFFFFFF0))"),
        rec(f"(call $set_input {CTX} (i32.const 0) (call $tensor (i32.const {{DIMS}})"
            " (i32.const 0) (i32.const 0xFFFFFF00) (i32.const 0x1000)))"),
        rec("(call $load (i32.const {MEM_END}) (i32.const 1) (i32.const 6) (i32.const 0)"
            " (i32.const {GRAPH2}))"),
        SET_PROMPT, SET_METADATA, COMPUTE,
        rec(f"(call $get_output {CTX} (i32.const 0) (i32.sub (i32.const {{MEM_END}})"
            " (i32.const 4)) (i32.const 64) (i32.const {WRITTEN}))"),
        rec(f"(call $get_output {CTX} (i32.const 0) (i32.const {{OUT}}) (i32.const 64)"
            " (i32.const {MEM_END}))"),
    ])
    assert values_of(host, body) == [0, 0] + [INVALID_ARGUMENT] * 5 + [0, 0, 0] \
        + [INVALID_ARGUMENT] * 2


def test_lengths_that_wrap_2_32(host):
    # ptr + len is 2^32 + something small: must not wrap to an in-bounds range.
    body = "\n".join([START,
        rec("(call $load_by_name (i32.const 0x100) (i32.const 0xFFFFFF00) (i32.const {GRAPH2}))"),
        rec("(call $load_by_name_with_config (i32.const {alias}) (i32.const {alias_len})"
            " (i32.const 0x10) (i32.const 0xFFFFFFF8) (i32.const {GRAPH2}))"),
        # 0x20000000 builders of 8 bytes: 2^32 bytes, 0 in 32-bit arithmetic.
        rec("(call $load (i32.const {BUILDERS}) (i32.const 0x20000000) (i32.const 6)"
            " (i32.const 0) (i32.const {GRAPH2}))"),
        rec(f"(call $set_input {CTX} (i32.const 0) (call $tensor (i32.const {{DIMS}})"
            " (i32.const 0) (i32.const 1) (i32.const 0xFFFFFFFF)))"),
        SET_PROMPT, SET_METADATA, COMPUTE,
        rec(f"(call $get_output {CTX} (i32.const 0) (i32.const {{OUT}}) (i32.const 0xFFFFFFF0)"
            " (i32.const {WRITTEN}))"),
    ])
    assert values_of(host, body) == [0, 0] + [INVALID_ARGUMENT] * 4 + [0, 0, 0] \
        + [INVALID_ARGUMENT]


def test_huge_tensor_dimensions(host):
    dims = "(i32.store (i32.const {DIMS}) (i32.const -1)) (i32.store (i32.const 0x64) (i32.const -1))"
    body = "\n".join([START, dims,
        rec(f"(call $set_input {CTX} (i32.const 0) (call $tensor (i32.const {{DIMS}})"
            " (i32.const 0xFFFFFFFF) (i32.const {prompt}) (i32.const {prompt_len})))"),
        rec(f"(call $set_input {CTX} (i32.const 0) (call $tensor (i32.const {{DIMS}})"
            " (i32.const 9) (i32.const {prompt}) (i32.const {prompt_len})))"),
        rec(f"(call $set_input {CTX} (i32.const 0) (call $tensor (i32.const {{DIMS}})"
            " (i32.const 2) (i32.const {prompt}) (i32.const {prompt_len})))"),
        rec(f"(call $set_input {CTX} (i32.const 0) (call $tensor (i32.const 0xFFFFFFF0)"
            " (i32.const 4) (i32.const {prompt}) (i32.const {prompt_len})))"),
    ])
    assert values_of(host, body) == [0, 0] + [INVALID_ARGUMENT] * 4


def test_a_16_mib_prompt(host):
    # 16 MiB of "a" at 1 MiB (the memory grown to 18 MiB at run time): within the host's input
    # limit but far past the context, refused before tokenizing; one byte more is too_large.
    fill = ("(drop (memory.grow (i32.const 288)))"
            "(memory.fill (i32.const 0x100000) (i32.const 0x61) (i32.const 0x1000001))")
    body = "\n".join([START, fill,
        rec(f"(call $text {CTX} (i32.const 0) (i32.const 0x100000) (i32.const 0x1000000))"),
        rec(f"(call $text {CTX} (i32.const 0) (i32.const 0x100000) (i32.const 0x1000001))"),
    ])
    started = time.monotonic()
    assert values_of(host, body) == [0, 0, PROMPT_TOO_LONG, TOO_LARGE]
    assert time.monotonic() - started < BOUND_S


# -- metadata --------------------------------------------------------------------------------
@pytest.mark.parametrize("metadata, codes", [
    ({"max_tokens": 1 << 24, "ignore_eos": True, "timeout_ms": 0}, [0, RUNTIME_ERROR]),
    ({"max_tokens": -1, "ignore_eos": True, "timeout_ms": 86_400_000}, [0, RUNTIME_ERROR]),
    ({"max_tokens": 1 << 31}, [INVALID_ARGUMENT, 0]),
    ({"timeout_ms": -1}, [INVALID_ARGUMENT, 0]),
], ids=["huge-max-tokens-no-deadline", "endless-day-deadline", "max-tokens-2^31", "negative"])
def test_metadata_cannot_outlast_the_operator(host, metadata, codes):
    # Rejected metadata leaves the context's settings as they were: 8 greedy tokens.
    body = "\n".join([START, SET_PROMPT, SET_METADATA, COMPUTE])
    started = time.monotonic()
    values = values_of(host, body, {"metadata": json.dumps(metadata).encode()})
    assert values == [0, 0, 0] + codes
    assert time.monotonic() - started < BOUND_S


# -- model names and files -------------------------------------------------------------------
def test_model_paths_outside_the_allowed_directory(host, places):
    models, outside = places
    graphs = host.backend.stats().graphs
    names = [f"{models}/../outside/secret.gguf", str(outside / "secret.gguf"),
             str(models / "escape.gguf"), str(models / "up" / "secret.gguf"), "/etc/passwd",
             "../../../../../../etc/passwd", str(models)]
    data = {f"n{i}": name.encode() for i, name in enumerate(names)}
    body = "\n".join(rec(f"(call $load_by_name (i32.const {{n{i}}}) (i32.const {{n{i}_len}})"
                         " (i32.const {GRAPH2}))") for i in range(len(names)))
    values = values_of(host, body, data)
    assert values == [RUNTIME_ERROR] * len(names)   # security reads as runtime_error in witx
    assert host.backend.stats().graphs == graphs


WASI = "wasi_snapshot_preview1"
# path_open("../outside/secret.gguf") and path_open("up/secret.gguf") relative to the first
# preopen (fd 3); exits with 1 (first refused) | 2 (second refused).
PATH_OPEN_GUEST = f"""(module
  (import "{WASI}" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "../outside/secret.gguf")
  (data (i32.const 64) "up/secret.gguf")
  (func (export "_start")
    (call $exit (i32.or
      (i32.ne (call $open (i32.const 3) (i32.const 1) (i32.const 16) (i32.const 22) (i32.const 0)
                          (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 128)) (i32.const 0))
      (i32.shl (i32.ne (call $open (i32.const 3) (i32.const 1) (i32.const 64) (i32.const 14)
                                   (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                                   (i32.const 128)) (i32.const 0)) (i32.const 1))))))"""


def test_wasi_cannot_open_a_file_outside_a_preopen(host, places):
    models, _ = places
    result = run_guest(wasmtime.wat2wasm(PATH_OPEN_GUEST), host=host,
                       dirs=[(str(models), "/models")])
    assert result.trap is None and result.exit_code == 3, result


# -- outputs, handles ------------------------------------------------------------------------
def test_output_buffers_too_small_or_out_of_range(host):
    body = "\n".join([START, SET_PROMPT, SET_METADATA, COMPUTE,
        rec(f"(call $get_output {CTX} (i32.const 0) (i32.const {{OUT}}) (i32.const 1)"
            " (i32.const {WRITTEN}))"),
        "(call $rec_at (i32.const {WRITTEN}))",
        rec(f"(call $get_output {CTX} (i32.const 0) (i32.const {{OUT}}) (i32.const 0)"
            " (i32.const {WRITTEN}))"),
        rec(f"(call $get_output {CTX} (i32.const 0) (i32.const {{MEM_END}}) (i32.const 1)"
            " (i32.const {WRITTEN}))"),
        rec(f"(call $get_output {CTX} (i32.const 2) (i32.const {{OUT}}) (i32.const 64)"
            " (i32.const {WRITTEN}))"),
        rec(f"(call $get_output_single {CTX} (i32.const 7) (i32.const {{OUT}}) (i32.const 64)"
            " (i32.const {WRITTEN}))"),
    ])
    values = values_of(host, body)
    assert values[:6] == [0, 0, 0, 0, 0, TOO_LARGE] and values[6] > 1   # the size needed
    assert values[7:] == [TOO_LARGE, INVALID_ARGUMENT, INVALID_ARGUMENT, INVALID_ARGUMENT]


def test_handles_never_issued(host):
    body = "\n".join([START] + [rec(call) for call in (
        "(call $compute (i32.const 12345))",
        "(call $compute_single (i32.const -1))",
        "(call $fini_single (i32.const 42))",
        "(call $init_execution_context (i32.const 99) (i32.const {CTX2}))",
        "(call $set_input (i32.const 77) (i32.const 0) (i32.const {TENSOR}))",
        "(call $get_output (i32.const 5) (i32.const 0) (i32.const {OUT}) (i32.const 64)"
        " (i32.const {WRITTEN}))",
        "(call $finalize_execution_context (i32.const 3))",
        "(call $unload (i32.const 7))",
    )])
    assert values_of(host, body) == [0, 0] + [NOT_FOUND] * 8


def test_double_finalize_and_double_unload(host):
    body = "\n".join([START] + [rec(call) for call in (
        f"(call $finalize_execution_context {CTX})",
        f"(call $finalize_execution_context {CTX})",
        f"(call $compute {CTX})",
        f"(call $unload {GRAPH})",
        f"(call $unload {GRAPH})",
        f"(call $init_execution_context {GRAPH} (i32.const {{CTX2}}))",
    )])
    assert values_of(host, body) == [0, 0, 0] + [NOT_FOUND] * 2 + [0] + [NOT_FOUND] * 2


# -- guests that do not stop -----------------------------------------------------------------
def test_a_guest_looping_on_compute_is_stopped_by_max_time(host):
    loop = f"(loop $again (drop (call $compute {CTX})) (br $again))"
    wat = wat_guest("\n".join([START, SET_PROMPT, SET_METADATA, loop]), CHAT_DATA)
    started = time.monotonic()
    result = run_guest(wat.text.encode(), host=host, max_time=1.0)
    assert result.exit_code == TIMEOUT_EXIT_CODE and "max_time" in result.trap, result
    assert time.monotonic() - started < BOUND_S


def test_a_guest_trapping_mid_generation(host):
    stream = "\n".join([rec(f"(call $compute_single {CTX})")] * 3)
    wat = wat_guest("\n".join([START, SET_PROMPT, SET_METADATA, stream, "unreachable"]),
                    CHAT_DATA)
    result = run_guest(wat.text.encode(), host=host, max_time=BOUND_S)
    assert result.exit_code == TRAP_EXIT_CODE and "unreachable" in result.trap, result
    assert decode_values(result.stderr) == []   # the values go out only at the end


# -- a load config that once aborted llama.cpp, in a child process ---------------------------
def test_a_load_config_that_aborted_llama_cpp_gets_an_error_code(places, tmp_path):
    models, _ = places
    load = ("(call $proc_exit (call $load_by_name_with_config (i32.const {alias})"
            " (i32.const {alias_len}) (i32.const {config}) (i32.const {config_len})"
            " (i32.const {GRAPH})))")
    guest = tmp_path / "n_batch.wasm"
    guest.write_bytes(wasmtime.wat2wasm(wat_guest(load, {
        "alias": b"default", "config": b'{"model":{"n_batch":1}}'}).text))
    run = subprocess.run(
        [sys.executable, "-m", "wasi_nn_backend.adapters.cli", "run-wasm", "--nn-preload",
         f"default:GGML:AUTO:{models / 'tiny.gguf'}", str(guest)],
        capture_output=True, timeout=BOUND_S * 2, stdin=subprocess.DEVNULL)
    assert run.returncode == INVALID_ARGUMENT, run.stderr[-500:]
