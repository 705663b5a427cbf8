"""The Erlang client (erlang/src/wasi_nn.erl) end to end: a real Erlang VM, the real port program
(python -m wasi_nn_backend.adapters.erlang) and the tiny model.

The modules are compiled with plain erlc (warnings are errors) into a temp dir; each test starts
`erl -noshell -pa DIR -eval ...` and checks its exit status and output. Scenarios run as
`wasi_nn_tests:run(Name)`, which prints "REPORT Key Kind Value" lines; the answers are compared
with what the Python API gives for the same chat messages. The Erlang toolchain is installed on
first use when missing and we run as root; when it cannot be had these tests FAIL, never skip.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wasi_nn_backend.api.backend import Backend

try:  # tests/adapters/erlang as a package, or (pytest's default rootdir mode) as a plain directory
    from . import erlang_toolchain
except ImportError:
    import erlang_toolchain

ERLANG_DIR = Path(__file__).resolve().parents[3] / "erlang"
SOURCES = (ERLANG_DIR / "src" / "wasi_nn.erl", ERLANG_DIR / "test" / "wasi_nn_tests.erl")
PYTHON = sys.executable  # the venv's python: it has the package

# Same settings on both sides: one llama.cpp thread (the tiny model needs no more, and on a
# busy 2-CPU machine the default thread count makes every token ~100x slower; greedy output is
# the same either way), greedy, 8 tokens, EOS ignored.
BACKEND_CONFIG = '{"logging":{"level":"error"}}'
LOAD_CONFIG = '{"model":{"threads":1}}'
RUNTIME = {"temperature": 0, "max_tokens": 8, "ignore_eos": True}
RUNTIME_JSON = '{"temperature":0,"max_tokens":8,"ignore_eos":true}'
MESSAGES = {"a": "Hello", "b": "Tell me a story", "a2": "And then?"}
ERL_TIMEOUT = 300


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def code_dir(erlang: erlang_toolchain.Toolchain, tmp_path_factory: pytest.TempPathFactory
             ) -> Path:
    """wasi_nn.beam and wasi_nn_tests.beam, built with erlc once per test session."""
    return erlang_toolchain.compile_modules(erlang, SOURCES, tmp_path_factory.mktemp("ebin"))


@pytest.fixture(scope="session")
def python_replies(tiny_model_path: str) -> dict[str, str]:
    """What the Python API answers: A and then A2 in one session, B and then A2 in another."""
    replies = {}
    with Backend(BACKEND_CONFIG) as backend:
        graph = backend.load(tiny_model_path, LOAD_CONFIG)
        for first in ("a", "b"):
            with graph.session() as session:
                replies[first] = session.chat(MESSAGES[first], **RUNTIME).text
                replies[f"{first}_a2"] = session.chat(MESSAGES["a2"], **RUNTIME).text
    # The checks below mean something only if the answers tell the sessions apart.
    assert replies["a"] != replies["b"], replies
    assert replies["a_a2"] != replies["b_a2"], replies
    assert all(replies.values()), replies
    return replies


@pytest.fixture(scope="session")
def port_env(tiny_model_path: str, python_replies: dict[str, str]) -> dict[str, str]:
    """The environment wasi_nn_tests reads: the port, the model, the messages, the answers."""
    env = {"WASI_NN_PYTHON": PYTHON, "WASI_NN_MODEL": tiny_model_path,
           "WASI_NN_BACKEND_CONFIG": BACKEND_CONFIG, "WASI_NN_LOAD_CONFIG": LOAD_CONFIG,
           "WASI_NN_RUNTIME_CONFIG": RUNTIME_JSON}
    env.update({f"WASI_NN_MSG_{key.upper()}": text for key, text in MESSAGES.items()})
    env.update({f"WASI_NN_EXPECT_{key.upper()}": base64.b64encode(text.encode()).decode()
                for key, text in python_replies.items()})
    return env


def erl(erlang: erlang_toolchain.Toolchain, code_dir: Path, expr: str, env: dict[str, str]
        ) -> subprocess.CompletedProcess[str]:
    return erlang_toolchain.erl(erlang, code_dir, expr, env, ERL_TIMEOUT)


def run_scenario(erlang: erlang_toolchain.Toolchain, code_dir: Path, env: dict[str, str],
                 name: str) -> dict[str, Any]:
    """wasi_nn_tests:run(Name) in a fresh VM; its report (ints, bytes, or term text)."""
    done = erl(erlang, code_dir, f"wasi_nn_tests:run({name}).", env)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and f"SCENARIO OK {name}" in done.stdout, (
        f"scenario {name}: exit status {done.returncode}\n{output[-6000:]}")
    report: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"REPORT (\S+) (int|b64|term) (.*)", line)
        if match:
            key, kind, value = match.groups()
            report[key] = (int(value) if kind == "int" else
                           base64.b64decode(value) if kind == "b64" else value)
    return report


def assert_reaped(os_pid: int) -> None:
    """The port program is gone: no /proc entry, or the pid now belongs to something else."""
    proc = Path(f"/proc/{os_pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return
    state = stat.rsplit(")", 1)[1].split()[0]
    assert state != "Z" and b"wasi_nn_backend.adapters.erlang" not in cmdline, (
        f"port program {os_pid} still there (state {state})")


# -- the eunit module ------------------------------------------------------------------------
EUNIT = ("case eunit:test(wasi_nn_tests, [verbose]) of ok -> halt(0); _ -> halt(1) end.")


_passed = erlang_toolchain.eunit_passed


def test_eunit_with_real_port(erlang, code_dir, port_env):
    done = erl(erlang, code_dir, EUNIT, port_env)
    passed = _passed(done)
    assert "real port: skipped" not in done.stdout
    for name in ("basic", "sessions", "text_args", "concurrent", "long_short", "streaming",
                 "errors", "timeout", "deinit", "kill", "stop", "supervised"):
        assert f"({name})..." in done.stdout, (name, done.stdout)
    assert passed >= 38, done.stdout


def test_eunit_without_port(erlang, code_dir):
    """The unit tests and the fake-port tests need no Python; the real ones say they skipped."""
    done = erl(erlang, code_dir, EUNIT, {})
    passed = _passed(done)
    assert "real port: skipped (WASI_NN_PYTHON, WASI_NN_MODEL not set)" in done.stdout
    assert passed >= 26


# -- scenarios, one VM each, checked against the Python API ------------------------------------
def test_basic_answer_equals_python(erlang, code_dir, port_env, python_replies):
    report = run_scenario(erlang, code_dir, port_env, "basic")
    assert report["text"].decode() == python_replies["a"]


def test_two_sessions_concurrently(erlang, code_dir, port_env, python_replies):
    """Two Erlang processes, two sessions, prompted at once: both answers are the Python API's,
    they differ (different messages), each session's second turn follows its own history, and
    both requests were in flight before either reply arrived."""
    report = run_scenario(erlang, code_dir, port_env, "concurrent")
    for key in ("a", "b", "a_a2", "b_a2"):
        assert report[key].decode() == python_replies[key], key
    assert report["a"] != report["b"]
    assert report["a_a2"] != report["b_a2"]
    assert max(report["sent_a_us"], report["sent_b_us"]) < min(report["got_a_us"],
                                                               report["got_b_us"])


def test_short_request_answered_during_long_generation(erlang, code_dir, port_env,
                                                       python_replies):
    """A long generation is streaming; a short request in another session, sent after its
    first token, is answered while the long one keeps producing tokens."""
    report = run_scenario(erlang, code_dir, port_env, "long_short")
    assert report["short"].decode() == python_replies["b"]
    assert report["first_token_us"] <= 0 < report["short_us"] < report["long_end_us"]
    assert report["long_tokens_during_short"] >= 1, report
    assert report["long_tokens_after_short"] >= 1, report


def test_streaming_joins_to_run_inference_text(erlang, code_dir, port_env, python_replies):
    report = run_scenario(erlang, code_dir, port_env, "streaming")
    assert report["text"].decode() == python_replies["a"]
    assert report["pieces"] > 1
    assert report["usage"].startswith(b"{")


def test_session_ids(erlang, code_dir, port_env):
    report = run_scenario(erlang, code_dir, port_env, "sessions")
    assert len({report["exec1"], report["exec2"], report["exec1_again"]}) == 3


def test_strings_and_binaries(erlang, code_dir, port_env):
    assert run_scenario(erlang, code_dir, port_env, "text_args")["text"]


def test_error_terms(erlang, code_dir, port_env):
    report = run_scenario(erlang, code_dir, port_env, "errors")
    codes = {key: re.match(r"\{error,\{(\w+),<<", value).group(1)
             for key, value in report.items() if key != "non_utf8_prompt"}
    assert codes == {
        "bad_session": "not_found", "bad_session_stream": "not_found",
        "closed_session": "not_found", "close_twice": "not_found", "bad_backend": "not_found",
        "missing_model": "model_not_found", "not_gguf": "invalid_encoding",
        "config_not_json": "invalid_encoding", "config_bad_value": "invalid_argument",
        "backend_config_not_json": "invalid_encoding",
        "runtime_config_not_json": "invalid_encoding",
        "runtime_config_bad_value": "invalid_argument", "exec_not_integer": "invalid_argument"}


def test_timeout(erlang, code_dir, port_env):
    report = run_scenario(erlang, code_dir, port_env, "timeout")
    assert 300 <= report["timeout_after_ms"] < 10000   # well short of the 30 s without it
    assert report["stream_pieces"] >= 1
    # the timed-out generations were endless: the session only answers because they were
    # cancelled (the scenario's 30 s timeouts would fire otherwise)
    assert report["next_waited_ms"] < 30000 and report["next_after_stream_ms"] < 30000


def test_killed_port_fails_every_pending_caller(erlang, code_dir, port_env):
    report = run_scenario(erlang, code_dir, port_env, "kill")
    assert report["callers"] == "[{error,{port_exit,137}},{error,{port_exit,137}}]"
    assert report["stream"] == "{error,{port_exit,137}}"
    assert report["server_exit"] == "{port_exit,137}"
    assert_reaped(report["os_pid"])


def test_stop_closes_the_port_without_zombie(erlang, code_dir, port_env):
    report = run_scenario(erlang, code_dir, port_env, "stop")
    assert_reaped(report["os_pid"])
    assert report["stop_ms"] < 5000


def test_supervised_restart(erlang, code_dir, port_env, python_replies):
    report = run_scenario(erlang, code_dir, port_env, "supervised")
    assert report["text"].decode() == python_replies["a"]
    assert report["os_pid_before"] != report["os_pid_after"]
    assert_reaped(report["os_pid_before"])


def test_deinit_backend(erlang, code_dir, port_env, python_replies):
    report = run_scenario(erlang, code_dir, port_env, "deinit")
    assert report["text"].decode() == python_replies["a"]


def test_hyperbeam_style_calls(erlang, code_dir, port_env, python_replies):
    """As HyperBEAM's dev_wasi_nn_nif is called: the registered server (start_link/0, python
    from WASI_NN_PYTHON), init_backend/0 (default logging: the port's log lines come as frames
    and go to the VM's logger, nothing on stderr), charlists everywhere, HyperBEAM's test config keys (plus
    greedy 8-token defaults, as run_inference/3 takes no runtime config), run_inference/3; then
    stop/0 and the port program is gone."""
    config = ('{"n_gpu_layers":98,"ctx_size":2048,"stream-stdout":true,"enable_debug_log":true,'
              '"n_threads":1,"temperature":0,"max_tokens":8,"ignore_eos":true}')
    expr = f"""
        process_flag(trap_exit, true),
        ok = logger:set_primary_config(level, info),
        {{ok, S}} = wasi_nn:start_link(),
        S = whereis(wasi_nn),
        {{ok, P}} = wasi_nn:port(),
        {{os_pid, Pid}} = erlang:port_info(P, os_pid),
        {{ok, Pid}} = wasi_nn:os_pid(),
        io:format("OSPID ~b~n", [Pid]),
        {{ok, Ctx}} = wasi_nn:init_backend(),
        ok = wasi_nn:load_by_name_with_config(Ctx, os:getenv("WASI_NN_MODEL"), {erl_string(config)}),
        {{ok, E}} = wasi_nn:init_execution_context(Ctx, "test_session_1"),
        true = is_integer(E),
        {{ok, Out}} = wasi_nn:run_inference(Ctx, E, {erl_string(MESSAGES["a"])}),
        true = is_binary(Out),
        io:format("OUT ~s~n", [base64:encode(Out)]),
        ok = wasi_nn:close_execution_context(Ctx, E),
        ok = wasi_nn:deinit_backend(Ctx),
        ok = wasi_nn:stop(),
        undefined = whereis(wasi_nn),
        logger_std_h:filesync(default),
        halt(0)."""
    done = erl(erlang, code_dir, expr, {"WASI_NN_PYTHON": PYTHON,
                                        "WASI_NN_MODEL": port_env["WASI_NN_MODEL"]})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    out = base64.b64decode(re.search(r"^OUT (\S*)$", done.stdout, re.M).group(1))
    assert out.decode() == python_replies["a"]
    # the port's log lines, through logger (its default handler writes to standard_io)
    assert re.search(r"=INFO REPORT=.*\n\s*wasi_nn_backend\S*: ", done.stdout), done.stdout
    assert "wasi_nn_backend" not in done.stderr
    assert_reaped(int(re.search(r"OSPID (\d+)", done.stdout).group(1)))


def test_the_callers_timeout_outlasts_the_backends_default_deadline(erlang, code_dir, port_env):
    """Regression (issue 17): a backend whose default_task_timeout_ms is shorter than a turn
    (here 1 ms) no longer times out a run_inference the caller is still waiting for: the call's
    timeout (run_inference/5's, else the server's 300 s) goes to the port as the deadline."""
    backend = '{"backend":{"default_task_timeout_ms":1},"logging":{"level":"error"}}'
    runtime = '{"temperature":0,"max_tokens":64,"ignore_eos":true}'
    expr = f"""
        {{ok, _}} = wasi_nn:start_link(),
        {{ok, Ctx}} = wasi_nn:init_backend({erl_string(backend)}),
        ok = wasi_nn:load_by_name_with_config(Ctx, os:getenv("WASI_NN_MODEL"),
                                              "{{\\"model\\":{{\\"threads\\":1}}}}"),
        {{ok, E}} = wasi_nn:init_execution_context(Ctx, "patient"),
        {{ok, A}} = wasi_nn:run_inference(Ctx, E, "Hello", {erl_string(runtime)}),
        {{ok, B}} = wasi_nn:run_inference(Ctx, E, "Again", {erl_string(runtime)}, 120000),
        io:format("LENS ~b ~b~n", [byte_size(A), byte_size(B)]),
        halt(0)."""
    done = erl(erlang, code_dir, expr, {"WASI_NN_PYTHON": PYTHON,
                                        "WASI_NN_MODEL": port_env["WASI_NN_MODEL"]})
    assert done.returncode == 0 and "LENS" in done.stdout, done.stdout + done.stderr[-4000:]


FAKE_TELEMETRY = """-module(telemetry).
-export([execute/3]).
execute(Event, Measurements, Metadata) -> telemetry_sink ! {Event, Measurements, Metadata}, ok.
"""


def test_telemetry_events_when_the_telemetry_app_is_there(erlang, code_dir, port_env, tmp_path):
    """With a telemetry module loaded (here a stand-in that forwards events), each request has
    [wasi_nn, request, start] and [..., stop] events; a turn's stop carries its usage JSON
    (token counts). Without one, nothing is called (every other test)."""
    (tmp_path / "telemetry.erl").write_text(FAKE_TELEMETRY)
    erlang_toolchain.compile_modules(erlang, [tmp_path / "telemetry.erl"], tmp_path)
    runtime = '{"temperature":0,"max_tokens":6,"ignore_eos":true}'
    expr = f"""
        register(telemetry_sink, self()),
        true = code:add_patha({erl_string(str(tmp_path))}),
        {{module, telemetry}} = code:ensure_loaded(telemetry),
        {{ok, _}} = wasi_nn:start_link(),
        {{ok, Ctx}} = wasi_nn:init_backend(),
        ok = wasi_nn:load_by_name_with_config(Ctx, os:getenv("WASI_NN_MODEL"), <<>>),
        {{ok, E}} = wasi_nn:init_execution_context(Ctx, "measured"),
        {{ok, _}} = wasi_nn:run_inference(Ctx, E, "Hello", {erl_string(runtime)}),
        Events = fun F(Acc) -> receive {{[wasi_nn, request, _], _, _}} = Ev -> F([Ev | Acc])
                               after 500 -> lists:reverse(Acc) end end,
        [io:format("EVENT ~s ~s ~s~n", [Kind, maps:get(op, Meta),
                                        base64:encode(maps:get(usage, Meta, <<>>))])
         || {{[wasi_nn, request, Kind], _, Meta}} <- Events([])],
        halt(0)."""
    done = erl(erlang, code_dir, expr, {"WASI_NN_PYTHON": PYTHON,
                                        "WASI_NN_MODEL": port_env["WASI_NN_MODEL"]})
    events = re.findall(r"^EVENT (\w+) (\w+) (\S*)$", done.stdout, re.M)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert [(kind, op) for kind, op, _ in events] == [
        (kind, op) for op in ("init_backend", "load_by_name_with_config",
                              "init_execution_context", "run_inference")
        for kind in ("start", "stop")], events
    usage = json.loads(base64.b64decode(events[-1][2]))
    assert usage["output_tokens"] == 6


def erl_string(text: str) -> str:
    """An Erlang string literal (a charlist) for ASCII text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the toolchain's decisions (monkeypatched: nothing installed) ------------------------------
def test_toolchain_fails_with_reason_when_not_root(monkeypatch):
    monkeypatch.setattr(erlang_toolchain, "_probe", lambda: (None, "no erl/erlc on PATH"))
    monkeypatch.setattr(erlang_toolchain.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(erlang_toolchain, "_apt_install",
                        lambda: pytest.fail("apt-get run as non-root"))
    toolchain, status = erlang_toolchain.find_or_install()
    assert toolchain is None
    assert "erlang-base erlang-eunit erlang-dev" in status and "no erl/erlc" in status


@pytest.mark.parametrize("install_error", [None, "apt-get update failed (100): no network"])
def test_toolchain_installs_once_as_root(monkeypatch, install_error):
    probes = iter([(None, "no erl/erlc on PATH"),
                   (erlang_toolchain.Toolchain("/usr/bin/erl", "/usr/bin/erlc", "25"), "")])
    installs = []
    monkeypatch.setattr(erlang_toolchain, "_probe", lambda: next(probes))
    monkeypatch.setattr(erlang_toolchain.os, "geteuid", lambda: 0)
    monkeypatch.setattr(erlang_toolchain.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(erlang_toolchain, "_apt_install",
                        lambda: installs.append(1) or install_error)
    toolchain, status = erlang_toolchain.find_or_install()
    assert installs == [1]
    if install_error:
        assert toolchain is None and install_error in status
    else:
        assert toolchain is not None and toolchain.otp_release == "25"
        assert "installed erlang-base erlang-eunit erlang-dev" in status
