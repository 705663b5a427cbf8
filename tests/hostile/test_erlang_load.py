"""The Erlang port under a flood of requests: bounded threads, refusals with busy where the
queue is full, an answer for every request, and the port still answering afterwards.

What this guards against: the port started one OS thread per request. 2,000 concurrent
requests made 1,984 threads (those on one session each blocked, waiting for the session's
earlier turn), none was refused with busy although queue_size was 500, and a valid request
after them timed out.

Every flood here runs while one endless generation holds the only sequence slot, so what is
admitted, queued and refused does not depend on timing; cancelling it lets the queue drain.
"""
from __future__ import annotations

import pytest
from erlang_port import A, B, PortProcess, error_of

FLOOD = 200
QUEUE = 8   # the backend's queue_size
BACKEND = ('{"backend":{"queue_size":%d,"max_sessions":%d},"logging":{"level":"error"}}'
           % (QUEUE, FLOOD + 10))
LOAD = '{"model":{"threads":1,"n_seq_max":1}}'
ENDLESS = '{"max_tokens":-1,"ignore_eos":true,"timeout_ms":0}'   # only a cancel ends it
SHORT = '{"temperature":0,"max_tokens":4,"ignore_eos":true,"timeout_ms":0}'
# the port's own threads (reader, forwarder, two pools) beyond those it had before the flood
THREAD_ALLOWANCE = 8


@pytest.fixture
def port(tmp_path, tiny_model_path):
    process = PortProcess(tmp_path)
    process.ctx = process.ok("init_backend", B(BACKEND))
    process.ok("load_by_name_with_config", process.ctx, B(tiny_model_path), B(LOAD))
    yield process
    process.cleanup()


HOG = 1   # the Id of the endless stream


def hog(port: PortProcess) -> int:
    """An endless stream on a session of its own, generating now: the only slot is taken.
    Its tokens are dropped from here on."""
    exec_ctx = port.ok("init_execution_context", port.ctx, B("hog"))
    port.send((HOG, A("run_inference_stream"), (port.ctx, exec_ctx, B("Hi"), B(ENDLESS))))
    got_id, event = port.receive()
    assert (got_id, event[0]) == (HOG, "token"), event
    port.muted.add(HOG)
    return exec_ctx


def collect(port: PortProcess, ids: range, count: int, baseline: int) -> dict:
    """The first ``count`` replies to requests in ``ids``, checking the port's thread count at
    each."""
    replies, peak = {}, 0
    while len(replies) < count:
        request_id, reply = port.receive(timeout=60)
        peak = max(peak, port.threads())
        assert request_id in ids and request_id not in replies, (request_id, reply)
        replies[request_id] = reply
    assert peak <= baseline + THREAD_ALLOWANCE, f"{peak} threads (before the flood: {baseline})"
    return replies


def drain(port: PortProcess, waiting: set) -> None:
    """Cancel the hog: it ends (not_found), and the requests it held back (``waiting``) then
    run, each answered with ok."""
    port.send((HOG + 1, A("cancel"), (HOG,)))
    ended = {HOG: "not_found", HOG + 1: "ok"}
    while waiting or ended:
        request_id, reply = port.receive(timeout=60)
        if request_id in ended:
            got = reply if reply == "ok" else error_of(reply)[0]
            assert got == ended.pop(request_id), (request_id, reply)
        else:
            assert request_id in waiting and reply[0] == "ok", (request_id, reply)
            waiting.discard(request_id)


def answered_after(port: PortProcess) -> None:
    exec_ctx = port.ok("init_execution_context", port.ctx, B("after-the-flood"))
    assert port.ok("run_inference", port.ctx, exec_ctx, B("Hello"), B(SHORT))


def test_a_flood_on_many_sessions_is_refused_with_busy_beyond_the_queue(port):
    hog(port)
    sessions = [port.ok("init_execution_context", port.ctx, B(f"s{n}")) for n in range(FLOOD)]
    baseline = port.threads()
    for n, exec_ctx in enumerate(sessions):
        port.send((1000 + n, A("run_inference"), (port.ctx, exec_ctx, B("Hello"), B(SHORT))))
    # QUEUE of them wait for the slot (no reply yet); every other one is refused at once
    ids = range(1000, 1000 + FLOOD)
    busy = collect(port, ids, FLOOD - QUEUE, baseline)
    assert {error_of(reply)[0] for reply in busy.values()} == {"busy"}, busy
    drain(port, set(ids) - busy.keys())
    answered_after(port)


def test_a_flood_on_one_session_waits_in_a_bounded_queue(port):
    exec_ctx = hog(port)
    baseline = port.threads()
    ids = range(2000, 2000 + FLOOD)
    for request_id in ids:
        port.send((request_id, A("run_inference"), (port.ctx, exec_ctx, B("Hello"), B(SHORT))))
    # the session runs one turn at a time: QUEUE requests wait behind the endless one, the
    # rest are refused with busy at once (no thread waits for the session meanwhile)
    replies = collect(port, ids, FLOOD - QUEUE, baseline)
    assert {error_of(reply)[0] for reply in replies.values()} == {"busy"}, replies
    assert replies.keys() == set(ids[QUEUE:])   # first come, first served
    assert "wait for their session" in error_of(replies[ids[-1]])[1]
    drain(port, set(ids[:QUEUE]))
    answered_after(port)


def test_a_cancel_reaches_a_request_still_waiting_for_its_session(port):
    exec_ctx = hog(port)
    port.send((3001, A("run_inference"), (port.ctx, exec_ctx, B("Hello"), B(SHORT))))
    port.send((3002, A("cancel"), (3001,)))
    replies = dict(port.receive(timeout=30) for _ in range(2))
    assert replies[3002] == "ok"
    code, message = error_of(replies[3001])
    assert code == "not_found" and "cancelled" in message
    drain(port, set())
    answered_after(port)


def test_a_load_that_would_abort_llama_cpp_is_refused_and_the_port_lives(port, tiny_model_path):
    # n_batch 1 < n_seq_max 8: llama.cpp's output_reserve asserts and abort()s the process
    reply = port.request("load_by_name_with_config", port.ctx, B(tiny_model_path),
                         B('{"model":{"n_batch":1}}'))
    code, message = error_of(reply)
    assert code == "invalid_argument" and "n_batch" in message, message
    assert port.proc.poll() is None
    answered_after(port)
