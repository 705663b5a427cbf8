"""Every wasi_ephemeral_nn import on its success path, called by WAT guests with pointers into
their own memory: real text comes back, handles count from 0 and are never reused, streaming
ends with end_of_sequence, a full context gives context_full, unload and finalize free."""
from __future__ import annotations

import json
import re
from pathlib import Path

SUCCESS, INVALID_ENCODING, NOT_FOUND, END_OF_SEQUENCE, CONTEXT_FULL = 0, 2, 8, 100, 101
USAGE_KEYS = {"input_tokens", "output_tokens", "llama_build_number", "llama_commit"}
PRINT_USAGE = ("(call $rec (call $get_output (i32.load (i32.const {CTX})) (i32.const 1) "
               "(i32.const {OUT}) (i32.const {OUT_LEN}) (i32.const {WRITTEN})))"
               "(call $print (i32.const {OUT}) (i32.load (i32.const {WRITTEN})))")
LOAD_WITH_CONFIG = ("(call $rec (call $load_by_name_with_config (i32.const {alias}) "
                    "(i32.const {alias_len}) (i32.const {config}) (i32.const {config_len}) "
                    "(i32.const {GRAPH})))")
# compute_single until it returns non-zero (at most 64 times), printing each piece.
STREAM = """
    (local.set $i (i32.const 0))
    (block $done (loop $next
      (local.set $rc (call $compute_single (i32.load (i32.const {CTX}))))
      (br_if $done (local.get $rc))
      (call $rec (call $get_output_single (i32.load (i32.const {CTX})) (i32.const 0)
                  (i32.const {OUT}) (i32.const {OUT_LEN}) (i32.const {WRITTEN})))
      (call $print (i32.const {OUT}) (i32.load (i32.const {WRITTEN})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 64)))))
    (call $rec (local.get $i))
    (call $rec (local.get $rc))
"""


def builders(*entries: tuple[str, str]) -> str:
    """WAT storing {ptr, len} builder records at BUILDERS, from data entry names."""
    stores = []
    for index, (ptr, length) in enumerate(entries):
        offset = index * 8
        stores.append(f"(i32.store (i32.const {{BUILDERS}}) (i32.const {{{ptr}}}))"
                      if offset == 0 else
                      f"(i32.store (i32.const {{BUILDERS_{offset}}}) (i32.const {{{ptr}}}))")
        stores.append(f"(i32.store (i32.const {{BUILDERS_{offset + 4}}}) (i32.const {{{length}}}))")
    return "\n".join(stores)


def load_call(count: int, encoding: int, target: int, out: str = "GRAPH") -> str:
    return (f"(call $rec (call $load (i32.const {{BUILDERS}}) (i32.const {count}) "
            f"(i32.const {encoding}) (i32.const {target}) (i32.const {{{out}}})))")


def run_text_flow(wat, nn_host, load: str, data: dict):
    body = "\n".join([load, wat.NEW_CONTEXT, wat.SET_PROMPT, wat.SET_METADATA, wat.COMPUTE,
                      wat.GET_TEXT])
    return wat.run(body, {**wat.CHAT_DATA, **data}, host=nn_host)


# -- load_by_name, init_execution_context, set_input, compute, get_output ----------------------
def test_chat_flow_returns_the_python_api_text(nn_host, wat, expected_text):
    run = wat.run(wat.CHAT, wat.CHAT_DATA, host=nn_host)

    assert run.values == [SUCCESS] * 6
    assert run.stdout == expected_text


def test_handles_count_from_zero_and_are_never_reused(nn_host, wat):
    body = "\n".join([
        wat.LOAD_DEFAULT, "(call $rec_at (i32.const {GRAPH}))",
        wat.NEW_CONTEXT, "(call $rec_at (i32.const {CTX}))",
        "(call $rec (call $finalize_execution_context (i32.load (i32.const {CTX}))))",
        wat.NEW_CONTEXT, "(call $rec_at (i32.const {CTX}))",
        "(call $rec (call $unload (i32.load (i32.const {GRAPH}))))",
        wat.LOAD_DEFAULT, "(call $rec_at (i32.const {GRAPH}))"])
    run = wat.run(body, {"alias": b"default"}, host=nn_host)
    assert run.values == [SUCCESS, 0, SUCCESS, 0, SUCCESS, SUCCESS, 1, SUCCESS, SUCCESS, 1]


def test_usage_json_has_wasmedge_keys_after_set_input_and_after_compute(nn_host, wat):
    body = "\n".join([wat.LOAD_DEFAULT, wat.NEW_CONTEXT, wat.SET_PROMPT, PRINT_USAGE,
                      "(call $print (i32.const {newline}) (i32.const 1))",
                      wat.SET_METADATA, wat.COMPUTE, PRINT_USAGE])
    run = wat.run(body, {**wat.CHAT_DATA, "newline": b"\n"}, host=nn_host)

    assert run.values == [SUCCESS] * 7
    before, after = (json.loads(line) for line in run.stdout.split(b"\n"))
    assert USAGE_KEYS <= before.keys() and USAGE_KEYS <= after.keys()
    assert before["input_tokens"] == after["input_tokens"] > 0   # valid right after set_input
    assert before["output_tokens"] == 0
    assert after["output_tokens"] == wat.GENERATED_TOKENS
    # what the pinned build records (LlamaEdge reads these as a u64 and a string): llama.cpp's
    # commit as libggml records it, and the build number (release tag b11312) of that commit
    assert re.fullmatch(r"[0-9a-f]{7,40}", after["llama_commit"])
    assert after["llama_build_number"] == 11312 and after["llama_commit"] == "0c1e570"
    assert after["llama_cpp_python"] == "0.3.36" and after["ggml_version"] == "0.25.3"
    assert after["ggml_commit"].startswith(after["llama_commit"])
    model = after["model"]   # what the context runs on (an extra key; guests ignore unknown)
    assert model["architecture"] == "llama" and model["n_vocab"] > 0
    assert model["quantization"] == "F32" and model["n_params"] > 0 and model["file_size"] > 0


# -- load_by_name_with_config ------------------------------------------------------------------
def test_load_by_name_with_config_takes_kebab_case_keys(nn_host, wat, expected_text):
    config = b'{"ctx-size": 128, "n-predict": 3, "threads": 1}'
    run = run_text_flow(wat, nn_host, LOAD_WITH_CONFIG, {"config": config})

    assert run.values == [SUCCESS] * 6
    assert run.stdout == expected_text   # the metadata's max_tokens 8 beats n-predict 3


def test_load_config_is_checked(nn_host, wat):
    run = wat.run(LOAD_WITH_CONFIG + LOAD_WITH_CONFIG.replace("{config", "{bad"),
                  {"alias": b"default", "config": b"{not json", "bad": b'{"ctx-size": "x"}'},
                  host=nn_host)
    assert run.values == [INVALID_ENCODING, 1]


def test_a_config_cannot_make_the_host_open_a_file(nn_host, wat, tmp_path):
    target = tmp_path / "written-by-guest.log"
    config = json.dumps({"logging": {"file": str(target), "level": "debug"},
                         "model": {"path": "/etc/passwd", "n_ctx": 64}}).encode()
    run = run_text_flow(wat, nn_host, LOAD_WITH_CONFIG, {"config": config})
    assert run.values[:1] == [SUCCESS]
    assert not target.exists()


# -- load (builders) ---------------------------------------------------------------------------
def test_load_from_model_bytes_in_guest_memory(nn_host, wat, tiny_model_path, expected_text):
    load = "\n".join([builders(("model", "model_len"), ("config", "config_len")),
                      load_call(2, 6, 0), load_call(1, 5, 3, "GRAPH2"),
                      "(call $rec_at (i32.const {GRAPH})) (call $rec_at (i32.const {GRAPH2}))"])
    data = {"model": Path(tiny_model_path).read_bytes(),
            "config": b'{"ctx-size": 256, "threads": 1}'}
    run = run_text_flow(wat, nn_host, load, data)

    assert run.values == [SUCCESS, SUCCESS, 0, 1] + [SUCCESS] * 5
    assert run.stdout == expected_text


def test_load_preload_builder_uses_the_alias(nn_host, wat, expected_text):
    load = "\n".join([builders(("name", "name_len")), load_call(1, 6, 3)])
    run = run_text_flow(wat, nn_host, load, {"name": b"preload:default"})
    assert run.values == [SUCCESS] * 6
    assert run.stdout == expected_text


# -- compute_single, get_output_single, fini_single --------------------------------------------
def test_streaming_to_end_of_sequence_matches_compute(nn_host, wat, expected_text):
    body = "\n".join([
        wat.LOAD_DEFAULT, wat.NEW_CONTEXT, wat.SET_PROMPT, wat.SET_METADATA, STREAM,
        "(call $rec (call $get_output_single (i32.load (i32.const {CTX})) (i32.const 1)"
        " (i32.const {OUT}) (i32.const {OUT_LEN}) (i32.const {WRITTEN})))",
        "(call $rec (call $fini_single (i32.load (i32.const {CTX}))))",
        # after fini_single the next compute_single starts again from the prompt
        "(call $rec (call $compute_single (i32.load (i32.const {CTX}))))",
        "(call $rec (call $fini_single (i32.load (i32.const {CTX}))))"])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)

    pieces = wat.GENERATED_TOKENS
    assert run.values[:4] == [SUCCESS] * 4
    assert run.values[4:4 + pieces] == [SUCCESS] * pieces          # get_output_single
    assert run.values[4 + pieces:] == [pieces, END_OF_SEQUENCE, SUCCESS, SUCCESS, SUCCESS,
                                       SUCCESS]
    assert run.stdout == expected_text


def test_streaming_reports_context_full(nn_host, wat):
    config = b'{"ctx-size": 16, "ctx-shift": false, "threads": 1}'
    metadata = b'{"temperature": 0, "n-predict": -1, "ignore-eos": true}'
    body = "\n".join([LOAD_WITH_CONFIG, wat.NEW_CONTEXT, wat.SET_PROMPT, wat.SET_METADATA,
                      STREAM, wat.COMPUTE])
    run = wat.run(body, {**wat.CHAT_DATA, "config": config, "metadata": metadata},
                  host=nn_host)

    streamed = run.values[-3]
    assert 0 < streamed < 16
    assert run.values[-2:] == [CONTEXT_FULL, CONTEXT_FULL]   # compute_single, then compute


# -- unload, finalize_execution_context --------------------------------------------------------
def test_finalize_and_unload_free_and_forget_the_handles(nn_host, wat):
    ctx = "(i32.load (i32.const {CTX}))"
    body = "\n".join([
        wat.LOAD_DEFAULT, wat.NEW_CONTEXT,
        f"(call $rec (call $finalize_execution_context {ctx}))",
        f"(call $rec (call $compute {ctx}))",
        f"(call $rec (call $finalize_execution_context {ctx}))",
        "(call $rec (call $unload (i32.load (i32.const {GRAPH}))))",
        wat.NEW_CONTEXT,
        "(call $rec (call $unload (i32.load (i32.const {GRAPH}))))"])
    run = wat.run(body, {"alias": b"default"}, host=nn_host)
    assert run.values == [SUCCESS, SUCCESS, SUCCESS, NOT_FOUND, NOT_FOUND, SUCCESS, NOT_FOUND,
                          NOT_FOUND]


def test_a_context_outlives_the_unloaded_graph(nn_host, wat, expected_text):
    unload = "(call $rec (call $unload (i32.load (i32.const {GRAPH}))))"
    body = "\n".join([wat.LOAD_DEFAULT, wat.NEW_CONTEXT, unload, wat.SET_PROMPT,
                      wat.SET_METADATA, wat.COMPUTE, wat.GET_TEXT])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)
    assert run.values == [SUCCESS] * 7
    assert run.stdout == expected_text


def test_a_guest_leaves_no_session_behind(nn_host, wat):
    body = "\n".join([wat.LOAD_DEFAULT, wat.NEW_CONTEXT, wat.NEW_CONTEXT, wat.SET_PROMPT])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)
    assert run.values == [SUCCESS] * 4
    assert nn_host.backend.stats().sessions == 0
