"""The Erlang client as an OTP application: erlang/ is a rebar3 project (rebar.config,
src/wasi_nn.app.src, wasi_nn_app, wasi_nn_sup) that HyperBEAM's rebar3 build can take as a
dependency, and the same sources still build with plain erlc.

rebar3 runs on a copy of erlang/ (it writes _build) with the real port program and the tiny
model: `rebar3 compile`, `rebar3 xref`, and `rebar3 eunit` (every eunit module in one VM, as a
dependency's tests run), with and without WASI_NN_PYTHON. The project has no deps, so nothing
is fetched. rebar3 is installed from Debian on first use when missing and we run as root;
when it cannot be had these tests FAIL, never skip.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:  # tests/adapters/erlang as a package, or (pytest's default rootdir mode) as a plain directory
    from . import erlang_toolchain
except ImportError:
    import erlang_toolchain

ERLANG_DIR = Path(__file__).resolve().parents[3] / "erlang"
PYTHON = sys.executable  # the venv's python: it has the package
# One llama.cpp thread: on a busy 2-CPU machine the default thread count makes every token
# far slower (greedy output is the same either way).
REAL_ENV = {"WASI_NN_PYTHON": PYTHON, "WASI_NN_LOAD_CONFIG": '{"model":{"threads":1}}',
            "WASI_NN_BACKEND_CONFIG": '{"logging":{"level":"error"}}'}
TIMEOUT = 600
APP_TESTS = ("env_defaults", "server_options_from_env", "port_up_at_start",
             "kill9_restarts_server", "stop_closes_port", "start_port_false",
             "bad_python_fails_start")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of erlang/ without build outputs; rebar3's cache inside the tmp dir too."""
    copy = tmp_path / "wasi_nn"
    shutil.copytree(ERLANG_DIR, copy, ignore=shutil.ignore_patterns("_build", "ebin", "*.beam"))
    return copy


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """command in cwd with a VM environment (rebar3's cache under cwd); output in the result."""
    env = erlang_toolchain.vm_env({"REBAR_CACHE_DIR": str(cwd / ".rebar3-cache"), **env})
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, errors="replace",
                          env=env, timeout=TIMEOUT)


passed = erlang_toolchain.eunit_passed


def assert_app_tests_ran(output: str, real: bool) -> None:
    """wasi_nn_app_tests ran (all passed: see passed()), its real-port part only when real."""
    for name in APP_TESTS:
        assert f"wasi_nn_app_tests: {name}..." in output, name
    skipped = "application on the real port: skipped (WASI_NN_PYTHON not set)" in output
    assert skipped != real, output[-4000:]
    assert ("wasi_nn_app_tests: real_life..." in output) == real


# -- rebar3 ------------------------------------------------------------------------------------
def test_rebar3_compile_and_xref(rebar3, project):
    done = run([rebar3.path, "compile"], project, {})
    assert done.returncode == 0, done.stdout + done.stderr
    app = (project / "_build/default/lib/wasi_nn/ebin/wasi_nn.app").read_text()
    for module in ("wasi_nn", "wasi_nn_app", "wasi_nn_sup"):  # filled in by rebar3
        assert re.search(rf"\b{module}\b", app.split("modules", 1)[1]), app
    assert "{mod,{wasi_nn_app,[]}}" in re.sub(r"\s", "", app)
    done = run([rebar3.path, "xref"], project, {})
    assert done.returncode == 0, done.stdout + done.stderr


def test_rebar3_eunit_with_real_port(rebar3, project, tiny_model_path):
    """Every eunit module, the real-port parts included, in the VM `rebar3 eunit` starts."""
    done = run([rebar3.path, "eunit"], project, {**REAL_ENV, "WASI_NN_MODEL": tiny_model_path})
    assert passed(done, "rebar3 eunit") >= 38 + len(APP_TESTS) + 1  # wasi_nn_tests has >= 38
    assert_app_tests_ran(done.stdout, real=True)
    assert "real port: skipped" not in done.stdout


def test_rebar3_eunit_without_python(rebar3, project):
    """No Python: the unit and fake-port tests of every module pass, the real ones skip."""
    done = run([rebar3.path, "eunit"], project, {})
    assert passed(done, "rebar3 eunit") >= 26 + len(APP_TESTS)  # wasi_nn_tests has >= 26
    assert_app_tests_ran(done.stdout, real=False)


# -- plain erlc ----------------------------------------------------------------------------------
@pytest.fixture
def ebin(erlang, tmp_path) -> Path:
    """Every module built with erlc, and the .app.src copied in as ebin/wasi_nn.app (the
    README's Build section)."""
    sources = [*sorted((ERLANG_DIR / "src").glob("*.erl")), ERLANG_DIR / "test" /
               "wasi_nn_app_tests.erl"]
    out = erlang_toolchain.compile_modules(erlang, sources, tmp_path / "ebin")
    shutil.copy(ERLANG_DIR / "src" / "wasi_nn.app.src", out / "wasi_nn.app")
    return out


def test_plain_erlc_app_tests(erlang, ebin, tiny_model_path):
    expr = "case eunit:test(wasi_nn_app_tests, [verbose]) of ok -> halt(0); _ -> halt(1) end."
    done = run([erlang.erl, "-noshell", "-pa", str(ebin), "-eval", expr], ebin.parent,
               {**REAL_ENV, "WASI_NN_MODEL": tiny_model_path})
    assert passed(done, "eunit wasi_nn_app_tests") == len(APP_TESTS) + 1
    assert_app_tests_ran(done.stdout, real=True)


def test_sys_config_example_sets_every_key(erlang, ebin):
    """config/sys.config.example is a valid sys.config and the application reads every key
    in it: the server options (wasi_nn_sup:server_options/0) and its own keys."""
    shutil.copy(ERLANG_DIR / "config" / "sys.config.example", ebin.parent / "sys.config")
    expr = ('ok = application:load(wasi_nn), '
            'io:format("KEYS ~w~nSTART ~w~nCONFIG ~s~n", '
            '[[K || {K, _} <- wasi_nn_sup:server_options()], '
            'application:get_env(wasi_nn, start_port, unset), '
            'application:get_env(wasi_nn, backend_config, <<"unset">>)]), halt(0).')
    done = run([erlang.erl, "-noshell", "-config", str(ebin.parent / "sys"), "-pa", str(ebin),
                "-eval", expr], ebin.parent, {})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KEYS [python,args,env,timeout,shutdown_wait,name]\n" in done.stdout, done.stdout
    assert "START true\n" in done.stdout, done.stdout
    assert 'CONFIG {"logging":{"level":"warning"}}\n' in done.stdout, done.stdout


# -- the rebar3 installer's decisions (monkeypatched: nothing installed) -------------------------
def test_rebar3_fails_with_reason_when_not_root(monkeypatch):
    monkeypatch.setattr(erlang_toolchain, "_probe_rebar3", lambda: (None, "no rebar3 on PATH"))
    monkeypatch.setattr(erlang_toolchain.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(erlang_toolchain, "_apt_install_rebar3",
                        lambda: pytest.fail("apt-get run as non-root"))
    found, status = erlang_toolchain.find_or_install_rebar3()
    assert found is None
    assert "rebar3" in status and "no rebar3 on PATH" in status and "root" in status


def test_rebar3_installed_once_as_root(monkeypatch):
    probes = iter([(None, "no rebar3 on PATH"),
                   (erlang_toolchain.Rebar3("/usr/bin/rebar3", "rebar 3.19.0"), "")])
    installs = []
    monkeypatch.setattr(erlang_toolchain, "_probe_rebar3", lambda: next(probes))
    monkeypatch.setattr(erlang_toolchain.os, "geteuid", lambda: 0)
    monkeypatch.setattr(erlang_toolchain.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(erlang_toolchain, "_apt_install_rebar3", lambda: installs.append(1))
    found, status = erlang_toolchain.find_or_install_rebar3()
    assert installs == [1]
    assert found is not None and "installed rebar3" in status
