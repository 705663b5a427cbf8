"""The port's generation Options and log frames (docs/erlang-protocol.md): a caller's timeout
is the turn's deadline, so the backend's default_task_timeout_ms never ends a turn sooner than
the caller waits (issue 17: 50 three-turn chats got timeouts at 30 s while the client waited
300 s); run_inference can carry its usage; with --log-frames the log lines come as frames."""
from __future__ import annotations

import json

import pytest
from erlang_port import PORT_MODULE, A, B, PortProcess, error_of, loaded_port

from wasi_nn_backend.adapters.erlang.log_frames import level_name

# The backend's own default deadline: 1 ms, far shorter than any 200-token turn.
QUICK_DEADLINE = '{"backend":{"default_task_timeout_ms":1},"logging":{"level":"error"}}'
RUNTIME = '{"temperature":0,"max_tokens":200,"ignore_eos":true}'


@pytest.fixture(scope="module")
def port(tmp_path_factory, tiny_model_path):
    with loaded_port(tmp_path_factory.mktemp("options"), tiny_model_path,
                     QUICK_DEADLINE) as process:
        yield process


def turn(port, name, runtime, *options):
    exec_ctx = port.ok("init_execution_context", port.ctx, B(name))
    return port.request("run_inference", port.ctx, exec_ctx, B("Hello"), B(runtime), *options)


def test_without_a_timeout_the_backends_default_deadline_ends_the_turn(port):
    assert error_of(turn(port, "bare", RUNTIME))[0] == "timeout"


@pytest.mark.parametrize("timeout", [300_000, A("infinity")])
def test_the_callers_timeout_is_the_deadline(port, timeout):
    reply = turn(port, f"waits-{timeout}", RUNTIME, {A("timeout"): timeout})
    assert reply[0] == "ok" and len(reply[1]) > 0, reply


def test_a_timeout_ms_in_the_runtime_config_still_wins(port):
    runtime = json.dumps({**json.loads(RUNTIME), "timeout_ms": 1})
    assert error_of(turn(port, "own", runtime, {A("timeout"): 300_000}))[0] == "timeout"


def test_usage_comes_with_the_reply_when_asked(port):
    reply = turn(port, "usage", RUNTIME.replace("200", "5"),
                 {A("timeout"): 300_000, A("usage"): A("true")})
    assert reply[0] == "ok" and len(reply) == 3, reply
    usage = json.loads(reply[2])
    assert usage["output_tokens"] == 5 and usage["finish_reason"] == "length"


@pytest.mark.parametrize("options, needle", [
    ("not a map", "Options must be a map"), ({A("bogus"): 1}, "unknown Options keys"),
    ({A("timeout"): -5}, "Options timeout"), ({A("timeout"): A("soon")}, "Options timeout"),
    ({A("usage"): 3}, "Options usage")])
def test_bad_options_are_refused_with_a_reason(port, options, needle):
    code, message = error_of(turn(port, "bad", RUNTIME, options))
    assert code == "invalid_argument" and needle in message


def test_log_frames_carry_the_lines_the_backend_emits(tmp_path):
    process = PortProcess(tmp_path, PORT_MODULE + ("--log-frames",))
    try:
        ctx = process.ok("init_backend", B('{"backend":{"bogus":1}}'))
        process.ok("deinit_backend", ctx)
        warnings = [line for line in process.logs if line[1] == "warning"]
        assert ("log", "warning", b"wasi_nn_backend.config",
                b"backend.bogus: unknown key; ignored") in warnings
        assert "unknown key" not in process.log()   # not on stderr as well
        process.close_input()
        assert process.wait() == 0
    finally:
        process.cleanup()


@pytest.mark.parametrize("levelno, name", [(50, "critical"), (40, "error"), (30, "warning"),
                                           (20, "info"), (10, "debug"), (5, "debug")])
def test_python_levels_map_to_logger_levels(levelno, name):
    assert level_name(levelno) == name
