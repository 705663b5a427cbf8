"""Guest pointers and sizes the host must refuse without trapping or raising: out of bounds,
huge or negative lengths, records straddling the end of memory, oversized inputs, unknown
handles, bad encodings, targets and tensor types, output buffers too small."""
from __future__ import annotations

import pytest

from wasi_nn_backend.adapters.wasm import NnHost, run_guest

SUCCESS, INVALID_ARGUMENT, MISSING_MEMORY, UNSUPPORTED, TOO_LARGE, NOT_FOUND = 0, 1, 3, 6, 7, 8
CTX = "(i32.load (i32.const {CTX}))"


def tensor(dims_ptr: str, dims_len: str, type_word: str, data_ptr: str, data_len: str) -> str:
    """WAT writing a tensor record at TENSOR from WAT i32 expressions, then set_input index 0."""
    fields = zip(("{TENSOR}", "{TENSOR_4}", "{TENSOR_8}", "{TENSOR_12}", "{TENSOR_16}"),
                 (dims_ptr, dims_len, type_word, data_ptr, data_len), strict=True)
    stores = "".join(f"(i32.store (i32.const {at}) {value})" for at, value in fields)
    return stores + f"(call $rec (call $set_input {CTX} (i32.const 0) (i32.const {{TENSOR}})))"


def const(value: int | str) -> str:
    return f"(i32.const {value})"


def ready(wat) -> str:
    return "\n".join([wat.LOAD_DEFAULT, wat.NEW_CONTEXT])


# -- names and out-pointers --------------------------------------------------------------------
@pytest.mark.parametrize("name_ptr, name_len", [
    ("{MEM_END}", "1"),                  # starts past the end
    ("{alias}", "0xFFFFFFFF"),           # huge length
    ("-1", "7"),                         # a negative i32 is a pointer near 4 GiB
    ("(i32.sub (i32.const {MEM_END}) (i32.const 3))", "7"),   # straddles the end
])
def test_bad_name_pointers_are_invalid_argument(nn_host, wat, name_ptr, name_len):
    ptr = name_ptr if name_ptr.startswith("(") else const(name_ptr)
    body = (f"(call $rec (call $load_by_name {ptr} (i32.const {name_len}) (i32.const {{GRAPH}})))"
            + wat.LOAD_DEFAULT + "(call $rec_at (i32.const {GRAPH}))")
    run = wat.run(body, {"alias": b"default"}, host=nn_host)
    assert run.values == [INVALID_ARGUMENT, SUCCESS, 0]   # nothing loaded, no handle used


def test_out_pointer_at_the_very_end_of_memory(nn_host, wat):
    end4 = "(i32.sub (i32.const {MEM_END}) (i32.const 4))"
    end3 = "(i32.sub (i32.const {MEM_END}) (i32.const 3))"
    body = "\n".join([
        f"(call $rec (call $load_by_name (i32.const {{alias}}) (i32.const {{alias_len}}) {end3}))",
        f"(call $rec (call $load_by_name (i32.const {{alias}}) (i32.const {{alias_len}}) {end4}))",
        f"(call $rec (i32.load {end4}))",
        f"(call $rec (call $init_execution_context (i32.load {end4}) {end3}))",
        f"(call $rec (call $init_execution_context (i32.load {end4}) {end4}))"])
    run = wat.run(body, {"alias": b"default"}, host=nn_host)
    assert run.values == [INVALID_ARGUMENT, SUCCESS, 0, INVALID_ARGUMENT, SUCCESS]


def test_a_guest_without_exported_memory_gets_missing_memory(nn_host):
    """witx missing_memory (3); the guest checks the code itself (WASI needs a memory too)."""
    guest = b"""(module
      (import "wasi_ephemeral_nn" "load_by_name" (func $load (param i32 i32 i32) (result i32)))
      (memory 1)
      (func (export "_start")
        (if (i32.ne (call $load (i32.const 0) (i32.const 7) (i32.const 16)) (i32.const 3))
          (then unreachable))))"""
    result = run_guest(guest, host=nn_host)
    assert result.trap is None and result.exit_code == SUCCESS


# -- tensors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("record, expected", [
    (("{DIMS}", "1", "3", "{prompt}", "{prompt_len}"), SUCCESS),
    (("{DIMS}", "1", "0xABCDEF03", "{prompt}", "{prompt_len}"), SUCCESS),  # garbage padding
    (("{DIMS}", "0", "3", "{prompt}", "{prompt_len}"), SUCCESS),           # no dims: all data
    (("{MEM_END}", "1", "3", "{prompt}", "{prompt_len}"), INVALID_ARGUMENT),
    (("{DIMS}", "0xFFFFFFFF", "3", "{prompt}", "{prompt_len}"), INVALID_ARGUMENT),
    (("{DIMS}", "1", "3", "{MEM_END}", "1"), INVALID_ARGUMENT),
    (("{DIMS}", "1", "3", "{prompt}", "0xFFFFFFFF"), INVALID_ARGUMENT),
    (("{DIMS}", "1", "3", "0xFFFFFFFF", "2"), INVALID_ARGUMENT),
    (("{DIMS}", "1", "1", "{prompt}", "{prompt_len}"), INVALID_ARGUMENT),  # f32
    (("{DIMS}", "1", "9", "{prompt}", "{prompt_len}"), INVALID_ARGUMENT),  # no such type
])
def test_tensor_records(nn_host, wat, record, expected):
    set_dims = "(i32.store (i32.const {DIMS}) (i32.const {prompt_len}))"
    body = "\n".join([ready(wat), set_dims, tensor(*(const(value) for value in record))])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)
    assert run.values == [SUCCESS, SUCCESS, expected]


def test_dims_one_means_all_the_data(nn_host, wat, expected_text):
    """LlamaEdge sends dims [1] for any prompt: data_len bytes are the prompt."""
    body = "\n".join([ready(wat), "(i32.store (i32.const {DIMS}) (i32.const 1))",
                      tensor(*(const(v) for v in ("{DIMS}", "1", "3", "{prompt}",
                                                  "{prompt_len}"))),
                      wat.SET_METADATA, wat.COMPUTE, wat.GET_TEXT])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)
    assert run.values == [SUCCESS] * 6
    assert run.stdout == expected_text


def test_a_record_straddling_the_end_of_memory(nn_host, wat):
    body = "\n".join([ready(wat), "(call $rec (call $set_input "
                      f"{CTX} (i32.const 0) (i32.sub (i32.const {{MEM_END}}) (i32.const 16))))",
                      "(call $rec (call $set_input "
                      f"{CTX} (i32.const 2) (i32.const {{TENSOR}})))"])
    run = wat.run(body, {"alias": b"default"}, host=nn_host)
    assert run.values == [SUCCESS, SUCCESS, INVALID_ARGUMENT, INVALID_ARGUMENT]


# -- load builders -----------------------------------------------------------------------------
@pytest.mark.parametrize("builders_ptr, count, expected", [
    ("{MEM_END}", "1", INVALID_ARGUMENT),
    ("{BUILDERS}", "0", INVALID_ARGUMENT),
    ("{BUILDERS}", "0x20000000", INVALID_ARGUMENT),   # 8 * count wraps 32 bits
    ("{BUILDERS}", "0xFFFFFFFF", INVALID_ARGUMENT),
    ("{bad_builder}", "1", INVALID_ARGUMENT),         # builder[0] points past the end
])
def test_bad_builder_arrays(nn_host, wat, builders_ptr, count, expected):
    body = (f"(call $rec (call $load (i32.const {builders_ptr}) (i32.const {count}) "
            "(i32.const 6) (i32.const 0) (i32.const {GRAPH})))")
    bad_builder = (0xFFFFFF00).to_bytes(4, "little") + (0x200).to_bytes(4, "little")
    run = wat.run(body, {"bad_builder": bad_builder}, host=nn_host)
    assert run.values == [expected]


@pytest.mark.parametrize("encoding, target, expected", [
    (6, 0, SUCCESS), (5, 3, SUCCESS), (0, 0, UNSUPPORTED), (7, 0, UNSUPPORTED),
    (6, 4, INVALID_ARGUMENT), (-1, 0, UNSUPPORTED),
])
def test_encoding_and_target(nn_host, wat, encoding, target, expected):
    body = ("(i32.store (i32.const {BUILDERS}) (i32.const {name}))"
            "(i32.store (i32.const {BUILDERS_4}) (i32.const {name_len}))"
            f"(call $rec (call $load (i32.const {{BUILDERS}}) (i32.const 1) (i32.const {encoding})"
            f" (i32.const {target}) (i32.const {{GRAPH}})))")
    run = wat.run(body, {"name": b"preload:default"}, host=nn_host)
    assert run.values == [expected]


def test_bad_encoding_with_model_bytes(nn_host, wat):
    body = ("(i32.store (i32.const {BUILDERS}) (i32.const {model}))"
            "(i32.store (i32.const {BUILDERS_4}) (i32.const {model_len}))"
            "(call $rec (call $load (i32.const {BUILDERS}) (i32.const 1) (i32.const 1)"
            " (i32.const 0) (i32.const {GRAPH})))")
    run = wat.run(body, {"model": b"GGUF not really"}, host=nn_host)
    assert run.values == [UNSUPPORTED]


# -- get_output buffers ------------------------------------------------------------------------
def _get(ptr: str, length: str, written: str = "{WRITTEN}") -> str:
    return (f"(call $rec (call $get_output {CTX} (i32.const 0) (i32.const {ptr}) "
            f"(i32.const {length}) (i32.const {written})))(call $rec_at (i32.const {{WRITTEN}}))")


def computed(wat) -> str:
    return "\n".join([wat.LOAD_DEFAULT, wat.NEW_CONTEXT, wat.SET_PROMPT, wat.SET_METADATA,
                      wat.COMPUTE, "(i32.store (i32.const {WRITTEN}) (i32.const 12345))"])


def test_output_buffer_too_small_gives_too_large_and_the_size(nn_host, wat, expected_text):
    body = "\n".join([computed(wat), _get("{OUT}", "4"), _get("{OUT}", "0"),
                      "(call $rec (i32.load (i32.const {OUT})))",
                      _get("{OUT}", "{OUT_LEN}")])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)
    need = len(expected_text)
    assert run.values[:5] == [SUCCESS] * 5
    assert run.values[5:] == [TOO_LARGE, need, TOO_LARGE, need, 0, SUCCESS, need]


@pytest.mark.parametrize("ptr, length, written", [
    ("{MEM_END}", "1", "{WRITTEN}"),
    ("{OUT}", "0xFFFFFFFF", "{WRITTEN}"),
    ("0xFFFFFFF0", "16", "{WRITTEN}"),
    ("{OUT}", "{OUT_LEN}", "{MEM_END}"),
    ("{OUT}", "{OUT_LEN}", "0xFFFFFFFE"),
])
def test_bad_output_pointers(nn_host, wat, ptr, length, written):
    body = "\n".join([computed(wat), _get(ptr, length, written)])
    run = wat.run(body, wat.CHAT_DATA, host=nn_host)
    assert run.values[5:] == [INVALID_ARGUMENT, 12345]   # nothing written


def test_lenient_output_writes_past_out_max_len_inside_memory(tiny_model_path, wat,
                                                              expected_text):
    near_end = "(i32.sub (i32.const {MEM_END}) (i32.const 2))"
    body = "\n".join([computed(wat), _get("{OUT}", "0"),
                      "(call $print (i32.const {OUT}) (i32.load (i32.const {WRITTEN})))",
                      f"(call $rec (call $get_output {CTX} (i32.const 0) {near_end} "
                      "(i32.const 0) (i32.const {WRITTEN})))",
                      "(call $rec_at (i32.const {WRITTEN}))"])
    with NnHost(config=wat.HOST_CONFIG, preloads=[f"default:GGML:AUTO:{tiny_model_path}"],
                lenient_output=True) as host:
        run = wat.run(body, wat.CHAT_DATA, host=host)
    need = len(expected_text)
    assert run.values[5:] == [SUCCESS, need, TOO_LARGE, need]
    assert run.stdout == expected_text


# -- sizes past max_input_bytes ----------------------------------------------------------------
def test_inputs_larger_than_max_input_bytes_are_too_large(tiny_model_path, wat):
    limit = 64
    big, fits = b"x" * (limit + 1), b"y" * limit
    name = b"d" * (limit + 1)
    text = "(call $rec (call $text {ctx} (i32.const {index}) (i32.const {{{data}}}) " \
           "(i32.const {{{data}_len}})))"
    body = "\n".join([
        "(call $rec (call $load_by_name (i32.const {name}) (i32.const {name_len})"
        " (i32.const {GRAPH})))",
        "(call $rec (call $load_by_name_with_config (i32.const {alias}) (i32.const {alias_len})"
        " (i32.const {big}) (i32.const {big_len}) (i32.const {GRAPH})))",
        "(i32.store (i32.const {BUILDERS}) (i32.const {preload}))",
        "(i32.store (i32.const {BUILDERS_4}) (i32.const {preload_len}))",
        "(i32.store (i32.const {BUILDERS_8}) (i32.const {big}))",
        "(i32.store (i32.const {BUILDERS_12}) (i32.const {big_len}))",
        "(call $rec (call $load (i32.const {BUILDERS}) (i32.const 2) (i32.const 6)"
        " (i32.const 0) (i32.const {GRAPH})))",
        "(i32.store (i32.const {BUILDERS}) (i32.const {long_preload}))",
        "(i32.store (i32.const {BUILDERS_4}) (i32.const {long_preload_len}))",
        "(call $rec (call $load (i32.const {BUILDERS}) (i32.const 1) (i32.const 6)"
        " (i32.const 0) (i32.const {GRAPH})))",
        wat.LOAD_DEFAULT, wat.NEW_CONTEXT,
        text.format(ctx=CTX, index=0, data="big"), text.format(ctx=CTX, index=1, data="big"),
        text.format(ctx=CTX, index=0, data="fits")])
    data = {"alias": b"default", "name": name, "big": big, "fits": fits,
            "preload": b"preload:default", "long_preload": b"preload:" + name}
    with NnHost(config=wat.HOST_CONFIG, preloads=[f"default:GGML:AUTO:{tiny_model_path}"],
                max_input_bytes=limit) as host:
        run = wat.run(body, data, host=host)
    assert run.values == [TOO_LARGE, TOO_LARGE, TOO_LARGE, TOO_LARGE, SUCCESS, SUCCESS,
                          TOO_LARGE, TOO_LARGE, SUCCESS]


# -- unknown handles ---------------------------------------------------------------------------
def test_unknown_handles_are_not_found(nn_host, wat):
    out = "(i32.const {OUT}) (i32.const {OUT_LEN}) (i32.const {WRITTEN})"
    calls = [
        "(call $init_execution_context (i32.const 99) (i32.const {CTX}))",
        "(call $set_input (i32.const 99) (i32.const 0) (i32.const {TENSOR}))",
        "(call $compute (i32.const 99))",
        f"(call $get_output (i32.const 99) (i32.const 0) {out})",
        "(call $compute_single (i32.const 99))",
        f"(call $get_output_single (i32.const 99) (i32.const 0) {out})",
        "(call $fini_single (i32.const 99))",
        "(call $unload (i32.const 99))",
        "(call $finalize_execution_context (i32.const 99))",
        "(call $finalize_execution_context (i32.const -1))",
    ]
    body = "\n".join([ready(wat)] + [f"(call $rec {call})" for call in calls])
    run = wat.run(body, {"alias": b"default"}, host=nn_host)
    assert run.values == [SUCCESS, SUCCESS] + [NOT_FOUND] * len(calls)
