"""The operator's deadlines bind WebAssembly guests: a guest's metadata may tighten them, never
lift them, and ``max_time`` (run-wasm --max-time) stops a guest that sits inside a host call.

The bug: metadata ``{"max_tokens": -1, "ignore_eos": true, "timeout_ms": 0}`` lifted the
backend's default_task_timeout_ms (0 = no deadline), and epoch interruption cannot stop a
guest inside ``compute``: the guest generated forever past --max-time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters" / "wasm"))
from wat_harness import (CHAT, CHAT_DATA, HOST_CONFIG, LOAD_DEFAULT, NEW_CONTEXT,  # noqa: E402
                         SET_METADATA, SET_PROMPT, decode_values, wat_guest)

from wasi_nn_backend.adapters.wasm import GuestResult, NnHost, run_guest  # noqa: E402
from wasi_nn_backend.adapters.wasm.deadline import RunDeadline  # noqa: E402

BOUND_S = 30.0            # a run that should end in well under a second, on a loaded CI box
OPERATOR_MS = 300         # the operator's default_task_timeout_ms in these tests
SUCCESS, RUNTIME_ERROR = 0, 5   # witx: a request's timeout reads as runtime_error
ENDLESS = {"max_tokens": -1, "ignore_eos": True, "temperature": 0}
TIMEOUT_EXIT_CODE = 124

# compute, its code recorded, then the usage JSON (index 1) on stdout.
COMPUTE_AND_USAGE = """
  (call $rec (call $compute (i32.load (i32.const {CTX}))))
  (call $rec (call $get_output (i32.load (i32.const {CTX})) (i32.const 1) (i32.const {OUT})
                               (i32.const {OUT_LEN}) (i32.const {WRITTEN})))
  (call $print (i32.const {OUT}) (i32.load (i32.const {WRITTEN})))"""
# compute_single until it returns anything but success, that code recorded, then the usage.
STREAM_AND_USAGE = """
  (block $done (loop $next
    (local.set $rc (call $compute_single (i32.load (i32.const {CTX}))))
    (br_if $done (local.get $rc))
    (br $next)))
  (call $rec (local.get $rc))
  (call $rec (call $get_output (i32.load (i32.const {CTX})) (i32.const 1) (i32.const {OUT})
                               (i32.const {OUT_LEN}) (i32.const {WRITTEN})))
  (call $print (i32.const {OUT}) (i32.load (i32.const {WRITTEN})))"""


def _host(tiny_model_path: str, timeout_ms: int):
    config = {**HOST_CONFIG, "backend": {"default_task_timeout_ms": timeout_ms}}
    with NnHost(config=config, preloads=(f"default:GGML:AUTO:{tiny_model_path}",)) as host:
        yield host


@pytest.fixture(scope="module")
def operator_host(tiny_model_path):
    """The operator allows OPERATOR_MS per request."""
    yield from _host(tiny_model_path, OPERATOR_MS)


@pytest.fixture(scope="module")
def open_host(tiny_model_path):
    """The operator sets no request deadline (default_task_timeout_ms 0)."""
    yield from _host(tiny_model_path, 0)


def run_bounded(host: NnHost, body: str, metadata: dict, *, config: bytes = b"",
                max_time: float | None = None) -> tuple[GuestResult, list[int], float]:
    """Run the guest on a thread; fail (instead of hanging) if it is not back within BOUND_S.
    A guest left running ends when the module's host closes (its requests are cancelled)."""
    data = {"alias": b"default", "prompt": b"Once upon a time",
            "metadata": json.dumps(metadata).encode()}
    load = LOAD_DEFAULT
    if config:
        data["config"] = config
        load = ("(call $rec (call $load_by_name_with_config (i32.const {alias}) "
                "(i32.const {alias_len}) (i32.const {config}) (i32.const {config_len}) "
                "(i32.const {GRAPH})))")
    wat = wat_guest("\n".join([load, NEW_CONTEXT, SET_PROMPT, SET_METADATA, body]), data)
    box: list[GuestResult] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: box.append(
        run_guest(wat.text.encode(), host=host, max_time=max_time)), daemon=True)
    thread.start()
    thread.join(BOUND_S)
    elapsed = time.monotonic() - started
    if not box:
        pytest.fail(f"the guest was still running after {BOUND_S} s")
    return box[0], decode_values(box[0].stderr), elapsed


def assert_serves(host: NnHost) -> None:
    """The host lives: a plain guest still gets its 8 tokens, and no session is left over."""
    result = run_guest(wat_guest(CHAT, CHAT_DATA).text.encode(), host=host, max_time=BOUND_S)
    assert result.exit_code == 0 and len(result.stdout) > 0, result
    assert host.backend.stats().sessions == 0


# -- the operator's default_task_timeout_ms is a ceiling ---------------------------------------
@pytest.mark.parametrize("guest_timeout_ms", [0, 10_000_000], ids=["zero", "larger"])
def test_guest_metadata_cannot_lift_the_operators_deadline(operator_host, guest_timeout_ms):
    result, values, _ = run_bounded(operator_host, COMPUTE_AND_USAGE,
                                    {**ENDLESS, "timeout_ms": guest_timeout_ms})
    assert result.exit_code == 0, result
    assert values == [SUCCESS] * 4 + [RUNTIME_ERROR, SUCCESS]
    assert json.loads(result.stdout)["finish_reason"] == "timeout"
    assert_serves(operator_host)


def test_a_guest_load_config_cannot_lift_the_operators_deadline(operator_host):
    config = json.dumps({"backend": {"default_task_timeout_ms": 0}}).encode()
    result, values, _ = run_bounded(operator_host, COMPUTE_AND_USAGE, ENDLESS, config=config)
    assert values[4:] == [RUNTIME_ERROR, SUCCESS], result
    assert json.loads(result.stdout)["finish_reason"] == "timeout"


def test_a_streaming_guest_cannot_lift_the_operators_deadline(operator_host):
    result, values, _ = run_bounded(operator_host, STREAM_AND_USAGE,
                                    {**ENDLESS, "timeout_ms": 0})
    assert values[4:] == [RUNTIME_ERROR, SUCCESS], result
    assert json.loads(result.stdout)["finish_reason"] == "timeout"
    assert_serves(operator_host)


def test_guest_metadata_can_tighten_the_deadline(open_host):
    # The operator has no deadline; the guest's own 200 ms ends the endless request.
    result, values, _ = run_bounded(open_host, COMPUTE_AND_USAGE,
                                    {**ENDLESS, "timeout_ms": 200})
    assert values[4:] == [RUNTIME_ERROR, SUCCESS], result
    assert json.loads(result.stdout)["finish_reason"] == "timeout"


# -- max_time stops a guest inside a host call -------------------------------------------------
@pytest.mark.parametrize("body", [COMPUTE_AND_USAGE, STREAM_AND_USAGE], ids=["compute", "stream"])
def test_max_time_stops_a_guest_inside_compute(open_host, body):
    result, _, elapsed = run_bounded(open_host, body, {**ENDLESS, "timeout_ms": 0},
                                     max_time=0.5)
    assert result.exit_code == TIMEOUT_EXIT_CODE, result
    assert "max_time" in result.trap
    assert elapsed < BOUND_S
    assert open_host.backend.stats().sessions == 0
    assert_serves(open_host)


def test_max_time_is_a_ceiling_under_a_longer_guest_deadline(open_host):
    result, _, _ = run_bounded(open_host, COMPUTE_AND_USAGE,
                               {**ENDLESS, "timeout_ms": 3_600_000}, max_time=0.5)
    assert result.exit_code == TIMEOUT_EXIT_CODE, result


def test_max_time_cancels_a_request_that_has_no_deadline_of_its_own(open_host, monkeypatch):
    # Without the per-request bound, only the run's timer stops it: the guest's contexts are
    # closed (the request cancelled within one engine step) and compute comes back.
    monkeypatch.setattr(RunDeadline, "bound", lambda self, session: None)
    result, _, elapsed = run_bounded(open_host, COMPUTE_AND_USAGE,
                                     {**ENDLESS, "timeout_ms": 0}, max_time=0.5)
    assert result.exit_code == TIMEOUT_EXIT_CODE, result
    assert "max_time" in result.trap and elapsed < BOUND_S
    assert open_host.backend.stats().sessions == 0


# -- run-wasm --max-time -----------------------------------------------------------------------
# A guest that sleeps 10 minutes in poll_oneoff: a host call wasmtime cannot interrupt.
SLEEPER = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i64.store (i32.const 0) (i64.const 1))          ;; userdata
    (i32.store8 (i32.const 8) (i32.const 0))         ;; tag: clock
    (i32.store (i32.const 16) (i32.const 1))         ;; clock id: monotonic
    (i64.store (i32.const 24) (i64.const 600000000000))  ;; timeout: 600 s
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"""


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "wasi_nn_backend.adapters.cli", "run-wasm", *args],
                         capture_output=True, timeout=BOUND_S * 2, stdin=subprocess.DEVNULL)
    return run, time.monotonic() - started


def test_run_wasm_max_time_stops_the_issues_endless_guest(tiny_model_path, tmp_path):
    data = {"alias": b"default", "prompt": b"Once upon a time",
            "metadata": json.dumps({**ENDLESS, "timeout_ms": 0}).encode()}
    body = "\n".join([LOAD_DEFAULT, NEW_CONTEXT, SET_PROMPT, SET_METADATA, COMPUTE_AND_USAGE])
    guest = tmp_path / "endless.wasm"
    guest.write_bytes(wasmtime.wat2wasm(wat_guest(body, data).text))
    config = json.dumps({**HOST_CONFIG, "backend": {"default_task_timeout_ms": 0}})
    run, elapsed = _cli("--nn-preload", f"default:GGML:AUTO:{tiny_model_path}",
                        "--config", config, "--max-time", "1", str(guest))
    assert run.returncode == TIMEOUT_EXIT_CODE, run.stderr[-500:]
    assert b"ran past max_time (1.0 s)" in run.stderr
    assert elapsed < BOUND_S


def test_run_wasm_max_time_ends_a_guest_stuck_in_a_wasi_sleep(tmp_path):
    guest = tmp_path / "sleeper.wasm"
    guest.write_bytes(wasmtime.wat2wasm(SLEEPER))
    run, elapsed = _cli("--max-time", "0.5", str(guest))
    assert run.returncode == TIMEOUT_EXIT_CODE, run.stderr[-500:]
    assert b"ran past max_time (0.5 s)" in run.stderr
    assert elapsed < BOUND_S


# Loads the preloads slowly (as a large model would), then runs an empty guest.
SLOW_PRELOAD = """
import sys, time
from wasi_nn_backend.adapters import cli
from wasi_nn_backend.adapters.wasm import host
real = host.NnHost.__init__
def slow(self, *args, **kwargs):
    time.sleep(3.0)   # the work of loading a large preload, not a wait for a thread
    real(self, *args, **kwargs)
host.NnHost.__init__ = slow
sys.argv = ["wasi-nn-backend", "run-wasm", "--max-time", "0.5", sys.argv[1]]
sys.exit(cli.main())
"""


def test_run_wasm_max_time_counts_from_the_guests_start_not_the_preloads(tmp_path):
    """The CLI's last-resort stop is armed when the guest's max_time runs out, so a preload
    that takes longer than max_time + 2 s does not end a guest that never ran."""
    guest = tmp_path / "empty.wasm"
    guest.write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) '
                                        '(func (export "_start")))'))
    run = subprocess.run([sys.executable, "-c", SLOW_PRELOAD, str(guest)], capture_output=True,
                         timeout=BOUND_S * 2, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-500:]
