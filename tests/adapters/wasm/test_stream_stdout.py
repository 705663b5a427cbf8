"""WasmEdge's ``stream-stdout`` key: with it true, compute prints each piece to stdout as it is
generated (the GGML plugin's fmt::print + fflush per token), and get_output still returns the
whole text. Under run_guest "stdout" is the guest's stdout stream: captured, and seen by
``on_output`` as it is written. WasmEdge's prebuilt ``basic`` example sets the key in its load
config and prints nothing itself."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import parse_config

SUCCESS, INVALID_ARGUMENT, CONTEXT_FULL = 0, 1, 101
LOAD_WITH_CONFIG = ("(call $rec (call $load_by_name_with_config (i32.const {alias}) "
                    "(i32.const {alias_len}) (i32.const {config}) (i32.const {config_len}) "
                    "(i32.const {GRAPH})))")
MARK = "(call $print (i32.const {mark}) (i32.const {mark_len}))"


def _body(wat, load: str) -> str:
    # compute, a mark written by the guest, then the guest prints what get_output returns
    return "\n".join([load, wat.NEW_CONTEXT, wat.SET_PROMPT, wat.SET_METADATA, wat.COMPUTE,
                      MARK, wat.GET_TEXT])


def _run(wat, nn_host, load: str, data: dict):
    chunks: list[tuple[int, bytes]] = []
    run = wat.run(_body(wat, load), {**wat.CHAT_DATA, "mark": b"|", **data}, host=nn_host,
                  on_output=lambda fd, chunk: chunks.append((fd, chunk)))
    return run, [chunk for fd, chunk in chunks if fd == 1]


def test_load_config_stream_stdout_prints_each_piece_during_compute(nn_host, wat,
                                                                     expected_text):
    run, chunks = _run(wat, nn_host, LOAD_WITH_CONFIG,
                       {"config": b'{"stream-stdout": true, "ctx-size": 256}'})

    assert run.values == [SUCCESS] * 6
    # the pieces, written during compute (before the guest's mark), then the whole text again
    assert run.stdout == expected_text + b"|" + expected_text
    mark = chunks.index(b"|")
    assert b"".join(chunks[:mark]) == expected_text
    assert mark == wat.GENERATED_TOKENS          # one write per piece, as generated


def test_metadata_stream_stdout_turns_it_on_and_off(nn_host, wat, expected_text):
    metadata = json.loads(wat.METADATA)
    on = json.dumps({**metadata, "stream-stdout": True}).encode()
    off = json.dumps({**metadata, "stream-stdout": False}).encode()
    body = "\n".join([_body(wat, wat.LOAD_DEFAULT),
                      wat.SET_METADATA.replace("{metadata", "{off"), wat.COMPUTE, MARK])
    run = wat.run(body, {**wat.CHAT_DATA, "metadata": on, "off": off, "mark": b"|"},
                  host=nn_host)

    assert run.values == [SUCCESS] * 8
    assert run.stdout == expected_text + b"|" + expected_text + b"|"


def test_without_the_key_compute_prints_nothing(nn_host, wat, expected_text):
    run, _ = _run(wat, nn_host, wat.LOAD_DEFAULT, {})
    assert run.stdout == b"|" + expected_text


def test_a_stream_that_ends_early_keeps_its_code_and_text(nn_host, wat):
    config = b'{"stream-stdout": true, "ctx-size": 16, "ctx-shift": false, "threads": 1}'
    metadata = b'{"temperature": 0, "n-predict": -1, "ignore-eos": true}'
    run, chunks = _run(wat, nn_host, LOAD_WITH_CONFIG,
                       {"config": config, "metadata": metadata})
    assert run.values[:4] == [SUCCESS] * 4 and run.values[4] == CONTEXT_FULL
    printed, _, fetched = run.stdout.partition(b"|")
    assert printed and printed == fetched       # what was printed is what get_output gives


def test_the_key_is_accepted_and_checked():
    assert parse_config({"stream-stdout": True}) == parse_config({})
    with pytest.raises(errors.InvalidArgument, match="stream-stdout"):
        parse_config({"stream-stdout": "yes"})


def test_a_bad_stream_stdout_value_is_invalid_argument(nn_host, wat):
    run = wat.run(LOAD_WITH_CONFIG, {"alias": b"default", "config": b'{"stream-stdout": 1}'},
                  host=nn_host)
    assert run.values == [INVALID_ARGUMENT]
