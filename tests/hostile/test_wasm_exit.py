"""run-wasm exits with the guest's own status, every time.

The bug: wasmtime holds the guest's stdout/stderr callbacks (Python) in tasks on its tokio
worker threads and drops them there just after the Store goes. When that drop came while the
interpreter was finalizing, the worker thread taking the GIL was ended by pthread_exit, its
forced unwind crossed wasmtime's thread start (a Rust frame that cannot unwind), and the
process aborted: SIGABRT and "panic in a function that cannot unwind" instead of the guest's
status, in about a third of the runs of a quick guest that prints and exits.

The 50 runs are the CLI's ``main`` as a program (sys.argv, its return value through
sys.exit, interpreter finalization) in processes forked from one fresh template process that
has imported the CLI: the teardown of a real run, without 50 imports of the package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters" / "wasm"))
from wat_harness import wat_guest  # noqa: E402

RUNS = 50
WORKERS = 3
TIMEOUT_S = 300.0
NOT_FOUND = 8   # witx not_found: load_by_name of an alias nobody preloaded
SAID = b"[ERROR] model not found\n"

# WasmEdge's quick model-not-found guest, in WAT: load a model nobody preloaded, say so on
# stdout and stderr, exit with the code the load returned.
QUICK_BODY = """
  (local.set $rc (call $load_by_name (i32.const {name}) (i32.const {name_len}) (i32.const {GRAPH})))
  (call $print (i32.const {said}) (i32.const {said_len}))
  (call $write (i32.const 2) (i32.const {said}) (i32.const {said_len}))
  (call $proc_exit (local.get $rc))"""

# The template: imports the CLI (no thread started yet: forking is safe), then forks RUNS
# children, WORKERS at a time; each runs `wasi-nn-backend run-wasm GUEST` with its stdout and
# stderr in files and exits through sys.exit. Prints the wait statuses as JSON.
TEMPLATE = """
import json, os, sys, threading
from wasi_nn_backend.adapters import cli
guest, runs, workers, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
assert threading.active_count() == 1

def child(index):
    for fd, name in ((1, "out"), (2, "err")):
        file = os.open(os.path.join(folder, f"{index}.{name}"), os.O_WRONLY | os.O_CREAT)
        os.dup2(file, fd)
        os.close(file)
    sys.argv = ["wasi-nn-backend", "run-wasm", guest]
    sys.exit(cli.main())

statuses, running = {}, {}
while len(statuses) < runs:
    while len(statuses) + len(running) < runs and len(running) < workers:
        index = len(statuses) + len(running)
        pid = os.fork()
        if pid == 0:
            child(index)
        running[pid] = index
    pid, status = os.wait()
    statuses[running.pop(pid)] = status
print(json.dumps([statuses[index] for index in range(runs)]))
"""


@pytest.fixture(scope="module")
def quick_guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wat = wat_guest(QUICK_BODY, {"name": b"no-such-model", "said": SAID})
    path = tmp_path_factory.mktemp("guests") / "quick.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat.text))
    return path


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.WEXITSTATUS(status)}"


def test_a_quick_guest_exits_with_its_own_status_every_time(quick_guest, tmp_path):
    run = subprocess.run([sys.executable, "-c", TEMPLATE, str(quick_guest), str(RUNS),
                          str(WORKERS), str(tmp_path)],
                         capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    outcomes = [_describe(status) for status in json.loads(run.stdout)]
    wrong = {index: outcome for index, outcome in enumerate(outcomes)
             if outcome != f"status {NOT_FOUND}"}
    first = (tmp_path / f"{next(iter(wrong))}.err").read_bytes()[-600:] if wrong else b""
    assert not wrong, f"{len(wrong)} of {RUNS} runs: {sorted(set(wrong.values()))}; {first!r}"
    for index in range(RUNS):
        assert (tmp_path / f"{index}.out").read_bytes() == SAID
        assert (tmp_path / f"{index}.err").read_bytes() == SAID
