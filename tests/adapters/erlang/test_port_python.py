"""The Erlang port program without an Erlang VM: the test plays the VM. It starts the port
with fds 3/4 on pipes (as open_port(..., [nouse_stdio, {packet, 4}]) does) and speaks
External Term Format through erlang_py, the library the port itself uses (tests/erlang_port.py)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from typing import Any

import erlang
import pytest
from erlang_port import CLI, PORT_MODULE, A, B, PortProcess, error_of, loaded_port, plain

from wasi_nn_backend.adapters.erlang import Port
from wasi_nn_backend.adapters.erlang.frames import FrameReader, FrameTooLarge
from wasi_nn_backend.api.backend import Backend

CONFIG = '{"temperature":0,"max_tokens":8,"ignore_eos":true}'
# long enough that a quick request lands mid-generation; no deadline, so a loaded machine
# slows it down but never cuts it short
LONG_CONFIG = '{"temperature":0,"max_tokens":1500,"ignore_eos":true,"timeout_ms":0}'
MESSAGE = "Hello there"


@pytest.fixture
def start_port(tmp_path):
    ports = []

    def start(command: tuple[str, ...] = PORT_MODULE) -> PortProcess:
        ports.append(PortProcess(tmp_path, command))
        return ports[-1]
    yield start
    for port in ports:
        port.cleanup()


@pytest.fixture(scope="module")
def port(tmp_path_factory, tiny_model_path):
    """One port with a backend (``port.ctx``) that has the tiny model loaded."""
    with loaded_port(tmp_path_factory.mktemp("port"), tiny_model_path) as process:
        yield process


@pytest.fixture(scope="module")
def expected_reply(tiny_model_path) -> str:
    """What the Python API answers MESSAGE with, on a fresh session."""
    with Backend({"logging": {"level": "error"}}) as backend:
        return backend.load(tiny_model_path).session().chat(MESSAGE, CONFIG).text


def test_run_inference_matches_python_api(port, expected_reply):
    exec_ctx = port.ok("init_execution_context", port.ctx, B("same-as-python"))
    assert isinstance(exec_ctx, int)
    reply = port.ok("run_inference", port.ctx, exec_ctx, B(MESSAGE), B(CONFIG))
    assert reply.decode("utf-8") == expected_reply and expected_reply
    assert port.ok("init_execution_context", port.ctx, B("same-as-python")) == exec_ctx
    port.ok("close_execution_context", port.ctx, exec_ctx)
    assert port.request("close_execution_context", port.ctx, exec_ctx)[1][0] == "not_found"


def test_two_sessions_back_to_back_both_answer(port, expected_reply):
    contexts = {request_id: port.ok("init_execution_context", port.ctx, B(f"pair-{request_id}"))
                for request_id in (101, 102)}
    for request_id, exec_ctx in contexts.items():
        port.send((request_id, A("run_inference"), (port.ctx, exec_ctx, B(MESSAGE), B(CONFIG))))
    replies = dict(port.receive() for _ in contexts)  # in whichever order they finish
    assert replies == {request_id: ("ok", expected_reply.encode()) for request_id in contexts}


def test_stream_tokens_join_to_the_reply(port, expected_reply):
    exec_ctx = port.ok("init_execution_context", port.ctx, B("streamed"))
    port.send((7, A("run_inference_stream"), (port.ctx, exec_ctx, B(MESSAGE), B(CONFIG))))
    pieces = []
    while True:
        request_id, event = port.receive()
        assert request_id == 7
        if event[0] != "token":
            break
        pieces.append(event[1].decode("utf-8"))
    assert event[0] == "done", event
    assert "".join(pieces) == expected_reply and len(pieces) > 1
    usage = json.loads(event[1])
    assert usage["output_tokens"] == 8 and usage["finish_reason"] == "length"


def test_a_long_generation_does_not_hold_up_other_requests(port):
    exec_ctx = port.ok("init_execution_context", port.ctx, B("long"))
    port.send((1, A("run_inference_stream"), (port.ctx, exec_ctx, B(MESSAGE), B(LONG_CONFIG))))
    assert port.receive()[1][0] == "token"  # generating now
    port.send((2, A("init_execution_context"), (port.ctx, B("quick"))))
    order = []
    while 1 not in order or order[-1] != 1:
        request_id, reply = port.receive()
        if reply[0] != "token":
            order.append(request_id)
            assert reply[0] == ("ok" if request_id == 2 else "done"), reply
    assert order == [2, 1]


ENDLESS_CONFIG = '{"max_tokens":-1,"ignore_eos":true,"timeout_ms":0}'  # only a cancel ends it


def test_cancel_stops_a_running_generation(port, expected_reply):
    exec_ctx = port.ok("init_execution_context", port.ctx, B("cancelled"))
    port.send((601, A("run_inference"), (port.ctx, exec_ctx, B(MESSAGE), B(ENDLESS_CONFIG))))
    port.send((602, A("cancel"), (601,)))
    replies = dict(port.receive(timeout=30) for _ in range(2))  # in whichever order
    assert replies[602] == "ok"
    code, message = error_of(replies[601])   # cancelled before or while it generated
    assert code == "not_found" and ("closed while it generated" in message
                                    or "cancelled before it started" in message), message
    # cancelling again, or an Id that never ran, is still ok
    assert port.request("cancel", 601) == "ok"
    assert port.request("cancel", (B("no such"), A("request"))) == "ok"
    # the session is free: a new request answers (as on a fresh session: the cancelled turn
    # left the history as it was)
    reply = port.ok("run_inference", port.ctx, exec_ctx, B(MESSAGE), B(CONFIG))
    assert reply.decode("utf-8") == expected_reply
    port.ok("close_execution_context", port.ctx, exec_ctx)


def test_cancel_stops_a_stream(port):
    exec_ctx = port.ok("init_execution_context", port.ctx, B("cancelled-stream"))
    stream_id = (B("stream"), 7)  # any term is an Id, a cancel's argument too
    port.send((stream_id, A("run_inference_stream"),
               (port.ctx, exec_ctx, B(MESSAGE), B(ENDLESS_CONFIG))))
    assert port.receive(timeout=30)[1][0] == "token"  # generating now
    port.send((603, A("cancel"), (stream_id,)))
    ended = cancelled = False
    while not (ended and cancelled):
        request_id, reply = port.receive(timeout=30)
        if request_id == 603:
            assert reply == "ok"
            cancelled = True
        elif reply[0] != "token":
            assert plain(request_id) == (b"stream", 7)
            assert error_of(reply)[0] == "not_found"
            ended = True
    assert port.ok("run_inference", port.ctx, exec_ctx, B(MESSAGE), B(CONFIG))
    port.ok("close_execution_context", port.ctx, exec_ctx)


def test_cancel_takes_one_request_id(port):
    code, message = error_of(port.request("cancel", 1, 2))
    assert code == "invalid_argument" and "{RequestId}" in message


@pytest.mark.parametrize("payload, needle", [
    (b"", "not an Erlang term"),                            # a frame of length 0
    (b"\x00garbage", "version byte 131"),                   # not ETF
    (b"\x83\x68\x03\x61\x01", "declares 3 elements"),       # a term cut short
    (erlang.term_to_binary(A("hello")), "{Id, Op, Args}"),  # a term, not a request
    (erlang.term_to_binary((1, A("init_backend"))), "tuple of 2"),
])
def test_unreadable_frames_answer_undefined(port, payload, needle):
    port.send_raw(payload)
    request_id, reply = port.receive()
    assert request_id is None  # undefined
    code, message = error_of(reply)
    assert code == "invalid_argument" and needle in message


def test_each_bad_request_gets_its_own_reply(port, tiny_model_path):
    ctx = port.ctx
    live = port.ok("init_execution_context", ctx, B("bad-prompt"))
    cases = {
        501: (("bogus", ()), "invalid_argument", "unknown op bogus"),
        502: (("init_backend", B("{}")), "invalid_argument", "Args must be a tuple"),
        503: (("init_backend", (B(""), B(""))), "invalid_argument", "takes {ConfigJson}"),
        504: (("load_by_name_with_config", (ctx, tiny_model_path.encode(), B(""))),
              "invalid_argument",
              "Path (element 2 of {Ctx, Path, ConfigJson}) must be a binary, not a charlist"),
        505: (("run_inference", (ctx, B("1"), B("hi"), B(""))), "invalid_argument",
              "Exec (element 2"),
        506: (("run_inference", (ctx, 999_999, B("hi"), B(""))), "not_found",
              "execution context 999999"),
        507: (("init_execution_context", (ctx, B(""))), "invalid_argument", "session id"),
        508: (("load_by_name_with_config", (ctx, B("/no/such/model.gguf"), B(""))),
              "model_not_found", "/no/such/model.gguf"),
        509: (("init_backend", (B("{bad json"),)), "invalid_encoding", "JSON"),
        510: (("deinit_backend", (424242,)), "not_found", "424242"),
        511: (("run_inference", (ctx, live, B(b"\xff\xfe"), B(""))), "invalid_argument",
              "UTF-8"),
        512: (("load_by_name_with_config", (ctx, B(""), B(""))), "invalid_argument", "Path"),
        513: (("load_by_name_with_config", (ctx, B(b"/no/such/\xff.gguf"), B(""))),
              "model_not_found", "/no/such/\\udcff.gguf"),   # the path's bytes, escaped
        514: (("init_execution_context", (424242, B("s"))), "not_found", "424242"),
    }
    for number, ((op, args), _, _) in cases.items():
        port.send((number, A(op), args))
    replies = dict(port.receive() for _ in cases)
    for number, (_, code, needle) in cases.items():
        got_code, message = error_of(replies[number])
        assert (got_code, needle in message) == (code, True), (number, message)
    # ...and the port still works
    exec_ctx = port.ok("init_execution_context", ctx, B("after-errors"))
    assert port.ok("run_inference", ctx, exec_ctx, B(MESSAGE), B(CONFIG))


def test_any_id_comes_back_unchanged(port):
    ref = erlang.OtpErlangReference(A("vm@host"), b"\x00\x01\x02\x03" * 3, b"\x00\x00\x00\x07")
    for request_id in [(B("caller"), ref), b"charlist-id", A("an_atom"), -5, 2**70, 1.5]:
        port.send((request_id, A("bogus"), ()))
        got_id, reply = port.receive()
        assert erlang.term_to_binary(got_id) == erlang.term_to_binary(request_id)
        assert error_of(reply)[0] == "invalid_argument"


def test_latin1_atoms_from_older_encoders_are_read(port):
    # erlang_py sends a bytes-valued atom as SMALL_ATOM_EXT, as term_to_binary did before OTP 26
    op = erlang.OtpErlangAtom(b"init_execution_context")
    port.send((3, op, (port.ctx, B("latin1-atom"))))
    request_id, reply = port.receive()
    assert request_id == 3 and reply[0] == "ok"


def test_eof_on_fd3_deinitializes_and_exits_0(start_port, tiny_model_path):
    port = start_port(CLI)  # the wasi-nn-backend erlang-port command
    ctx = port.ok("init_backend", B(""))
    port.ok("load_by_name_with_config", ctx, B(tiny_model_path), B(""))
    exec_ctx = port.ok("init_execution_context", ctx, B("cut-off"))
    port.send((9, A("run_inference_stream"), (ctx, exec_ctx, B(MESSAGE), B(LONG_CONFIG))))
    assert port.receive()[1][0] == "token"
    port.close_input()  # mid-generation: the VM closed the port
    assert port.wait() == 0
    assert "deinitializing 1 backend(s)" in port.log()


def test_broken_fd4_exits_0(start_port):
    port = start_port()
    os.close(port.from_port)  # the VM side stops reading
    port.send((1, A("init_backend"), (B(""),)))  # its reply cannot be written
    assert port.wait() == 0


def test_without_fds_3_and_4_it_says_how_to_run_it():
    result = subprocess.run([sys.executable, *PORT_MODULE], capture_output=True, text=True,
                            timeout=60, close_fds=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "nouse_stdio" in result.stderr


def test_an_oversized_frame_is_skipped_and_reported():
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(struct.pack(">I", 100) + b"x" * 100 + struct.pack(">I", 3) + b"abc")
    reader = FrameReader(read_fd, max_bytes=10)
    with pytest.raises(FrameTooLarge, match="100 bytes"):
        reader.read()
    assert reader.read() == b"abc" and reader.read() is None
    os.close(read_fd)


def test_port_in_process_answers_until_eof():
    to_port_r, to_port_w = os.pipe()
    from_port_r, from_port_w = os.pipe()
    port = Port(to_port_r, from_port_w, max_frame_bytes=64)
    status = []
    server = threading.Thread(target=lambda: status.append(port.serve()), daemon=True)
    server.start()
    frames = [b"y" * 65, erlang.term_to_binary((1, A("deinit_backend"), (123456,)))]
    os.write(to_port_w, b"".join(struct.pack(">I", len(f)) + f for f in frames))
    replies = []
    with os.fdopen(from_port_r, "rb") as pipe:
        for _ in frames:
            (size,) = struct.unpack(">I", pipe.read(4))
            request_id, reply = erlang.binary_to_term(pipe.read(size))
            replies.append((request_id, plain(reply)))
        os.close(to_port_w)
        server.join(timeout=30)
    assert status == [0]
    assert replies[0][0] is None and "65 bytes" in error_of(replies[0][1])[1]
    assert replies[1][0] == 1 and error_of(replies[1][1])[0] == "not_found"
    os.close(to_port_r)
    os.close(from_port_w)


def test_the_port_in_process_leaves_no_thread_behind():
    to_port_r, to_port_w = os.pipe()
    from_port_r, from_port_w = os.pipe()
    server = threading.Thread(target=Port(to_port_r, from_port_w).serve, daemon=True)
    server.start()
    with os.fdopen(from_port_r, "rb") as pipe:
        def request(*term: Any) -> Any:
            frame = erlang.term_to_binary(term)
            os.write(to_port_w, struct.pack(">I", len(frame)) + frame)
            (size,) = struct.unpack(">I", pipe.read(4))
            return plain(erlang.binary_to_term(pipe.read(size))[1])

        reply, ctx = request(1, A("init_backend"), (B('{"logging":{"level":"error"}}'),))
        assert reply == "ok"                                        # on the call pool
        assert request(2, A("run_inference"), (ctx, 999, B("hi"), B("")))[1][0] == "not_found"
        assert request(3, A("cancel"), (2,)) == "ok"                # on the reader
        os.close(to_port_w)   # EOF: the port deinitializes the backend and ends
        server.join(timeout=30)
    os.close(to_port_r)
    os.close(from_port_w)
    for thread in [t for t in threading.enumerate() if t.name.startswith("erlang-")]:
        thread.join(timeout=30)
        assert not thread.is_alive(), thread.name
