"""dev_wasi_nn_nif (erlang/src/dev_wasi_nn_nif.erl), the drop-in for HyperBEAM's NIF module, end to
end: a real Erlang VM, the real port program and the tiny model.

The modules are compiled with plain erlc (warnings are errors; erlang_toolchain's helpers) and
erlang/test/dev_wasi_nn_nif_tests.erl runs under eunit: both API generations' call sequences,
50 concurrent processes x 3 turns against the sequential run, kill -9 of the port and recovery
on the old handles, and the bare-atom error style. One more VM runs HyperBEAM's device call
sequences of both generations and its answers are compared with the Python API's.
"""
from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wasi_nn_backend.api.backend import Backend

try:  # tests/adapters/erlang as a package, or (pytest's default rootdir mode) a plain directory
    from . import erlang_toolchain
except ImportError:
    import erlang_toolchain

ERLANG_DIR = Path(__file__).resolve().parents[3] / "erlang"
SOURCES = (ERLANG_DIR / "src" / "wasi_nn.erl", ERLANG_DIR / "src" / "dev_wasi_nn_nif.erl",
           ERLANG_DIR / "test" / "dev_wasi_nn_nif_tests.erl")
PYTHON = sys.executable  # the venv's python: it has the package
ERL_TIMEOUT = 120
EUNIT = "case eunit:test(dev_wasi_nn_nif_tests, [verbose]) of ok -> halt(0); _ -> halt(1) end."
SCENARIOS = ("gen_b", "gen_c", "concurrent", "kill", "atoms")

# As the eunit module's load config: one llama.cpp thread, greedy 8-token defaults.
LOAD_CONFIG = ('{"model":{"threads":1},"sampling":{"temperature":0,"ignore_eos":true},'
               '"stopping":{"max_tokens":8}}')


@pytest.fixture(scope="module")
def code_dir(erlang: erlang_toolchain.Toolchain, tmp_path_factory: pytest.TempPathFactory
             ) -> Path:
    return erlang_toolchain.compile_modules(erlang, SOURCES, tmp_path_factory.mktemp("ebin"))


def erl(erlang: erlang_toolchain.Toolchain, code_dir: Path, expr: str, env: dict[str, str]
        ) -> subprocess.CompletedProcess[str]:
    return erlang_toolchain.erl(erlang, code_dir, expr, env, ERL_TIMEOUT)


passed = erlang_toolchain.eunit_passed


def test_eunit_with_real_port(erlang, code_dir, tiny_model_path):
    done = erl(erlang, code_dir, EUNIT,
               {"WASI_NN_PYTHON": PYTHON, "WASI_NN_MODEL": tiny_model_path})
    count = passed(done)
    assert "real port: skipped" not in done.stdout
    for name in SCENARIOS:
        assert f"({name})..." in done.stdout, (name, done.stdout[-4000:])
    assert count >= 35


def test_eunit_without_port(erlang, code_dir):
    """The mapping, the error styles and bad handles need no port; the rest says it skipped."""
    done = erl(erlang, code_dir, EUNIT, {})
    assert passed(done) >= 30
    assert "real port: skipped (WASI_NN_PYTHON, WASI_NN_MODEL not set)" in done.stdout


def test_hyperbeam_sequences_answer_as_python(erlang, code_dir, tiny_model_path):
    """HyperBEAM's device paths, charlists in: generation B (switch_model,
    init_execution_context_once, run_inference/3) and generation C (ensure_model_loaded,
    init_session, run_inference/3 with the user's "" options) on the registered wasi_nn
    server; both first answers are the Python API's for the same message and settings."""
    with Backend() as backend:
        graph = backend.load(tiny_model_path, LOAD_CONFIG)
        with graph.session() as session:
            expected = session.chat("Hello", temperature=0, max_tokens=8, ignore_eos=True).text
    assert expected
    config = '"' + LOAD_CONFIG.replace('"', '\\"') + '"'
    expr = f"""
        {{ok, _}} = wasi_nn:start_link(),
        M = os:getenv("WASI_NN_MODEL"),
        {{ok, Ctx}} = dev_wasi_nn_nif:switch_model(M, {config}),
        {{ok, E}} = dev_wasi_nn_nif:init_execution_context_once(Ctx, binary_to_list(<<"hb-1">>)),
        {{ok, B}} = dev_wasi_nn_nif:run_inference(Ctx, E, binary_to_list(<<"Hello">>)),
        ok = dev_wasi_nn_nif:ensure_model_loaded(M, {config}),
        {{ok, S}} = dev_wasi_nn_nif:init_session(binary_to_list(<<"hb-2">>)),
        {{ok, C}} = dev_wasi_nn_nif:run_inference(S, binary_to_list(<<"Hello">>), ""),
        io:format("B ~s~nC ~s~n", [base64:encode(B), base64:encode(C)]),
        ok = dev_wasi_nn_nif:cleanup_all_contexts(),
        ok = wasi_nn:stop(),
        halt(0)."""
    done = erl(erlang, code_dir, expr, {"WASI_NN_PYTHON": PYTHON,
                                        "WASI_NN_MODEL": tiny_model_path})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    for generation in ("B", "C"):
        answer = re.search(rf"^{generation} (\S*)$", done.stdout, re.M).group(1)
        assert base64.b64decode(answer).decode() == expected, generation
