"""A harness that builds WAT guests around a test's body and runs them on an NnHost
(tests/adapters/wasm and tests/hostile import it as ``wat_harness``).

The WAT harness (``wat_guest`` / ``run_wat``): a guest's memory has fixed slots for handles and
sizes, a tensor record, a results array and an output buffer; ``data`` strings go after them.
The body calls the imports by name (``$load_by_name``, ...) and helpers: ``$rec`` records an
i32, ``$rec_at`` the u32 at an address, ``$print`` writes memory to stdout, ``$text`` sets a
U8 tensor input. Placeholders: the layout constants below, ``{NAME}`` / ``{NAME_len}`` for
each data entry. After the body, the recorded values go to stderr (little-endian i32s).
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wasi_nn_backend.adapters.wasm import GuestResult, NnHost, run_guest
from wasi_nn_backend.adapters.wasm.imports import ARITY

# Settings the WAT tests use: one thread (the tiny model does not need more), greedy 8 tokens.
HOST_CONFIG = {"logging": {"level": "error"}, "model": {"n_ctx": 256, "threads": 1}}
METADATA = b'{"temperature":0,"max_tokens":8,"ignore_eos":true}'
PROMPT = b"Once upon a time"
GENERATED_TOKENS = 8

PAGE = 65536
LAYOUT = {
    "GRAPH": 0x10, "GRAPH2": 0x14, "CTX": 0x18, "CTX2": 0x1C, "WRITTEN": 0x20,
    "IOVEC": 0x30, "TENSOR": 0x40, "DIMS": 0x60, "BUILDERS": 0x80, "RESULTS": 0x100,
    "OUT": 0x1000,
    "OUT_LEN": 0x8000, "DATA": 0x9000,
}
MAX_RESULTS = (LAYOUT["OUT"] - LAYOUT["RESULTS"]) // 4


def wat_string(data: bytes) -> str:
    return "".join(f"\\{byte:02x}" for byte in data)


def _import_decls(imports: Iterable[str]) -> str:
    lines = []
    for name in imports:
        params = " ".join(["i32"] * ARITY[name])
        lines.append(f'(import "wasi_ephemeral_nn" "{name}" '
                     f'(func ${name} (param {params}) (result i32)))')
    return "\n  ".join(lines)


_HELPERS = """
  (func $rec (param $value i32)
    (if (i32.lt_u (global.get $count) (i32.const {MAX_RESULTS}))
      (then (i32.store (i32.add (i32.const {RESULTS}) (i32.shl (global.get $count) (i32.const 2)))
                       (local.get $value))
            (global.set $count (i32.add (global.get $count) (i32.const 1))))))
  (func $rec_at (param $ptr i32) (call $rec (i32.load (local.get $ptr))))
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const {IOVEC}) (local.get $ptr))
    (i32.store (i32.const {IOVEC_LEN}) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const {IOVEC}) (i32.const 1) (i32.const {IOVEC_N}))))
  (func $print (param $ptr i32) (param $len i32)
    (call $write (i32.const 1) (local.get $ptr) (local.get $len)))
"""
_TEXT = """
  (func $text (param $ctx i32) (param $index i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const {DIMS}) (local.get $len))
    (i32.store (i32.const {TENSOR}) (i32.const {DIMS}))
    (i32.store (i32.const {TENSOR_4}) (i32.const 1))
    (i32.store (i32.const {TENSOR_8}) (i32.const 3))
    (i32.store (i32.const {TENSOR_12}) (local.get $ptr))
    (i32.store (i32.const {TENSOR_16}) (local.get $len))
    (call $set_input (local.get $ctx) (local.get $index) (i32.const {TENSOR})))
"""


@dataclass(frozen=True)
class Wat:
    text: str
    places: Mapping[str, int]
    memory_end: int


def wat_guest(body: str, data: Mapping[str, bytes] | None = None,
              imports: Iterable[str] = tuple(ARITY), *, memory: bool = True,
              extra: str = "") -> Wat:
    """A WASI command whose _start runs ``body`` (see the module docstring)."""
    imports = tuple(imports)
    places: dict[str, int] = dict(LAYOUT)
    places.update(IOVEC_LEN=LAYOUT["IOVEC"] + 4, IOVEC_N=LAYOUT["IOVEC"] + 8,
                  MAX_RESULTS=MAX_RESULTS,
                  **{f"TENSOR_{k}": LAYOUT["TENSOR"] + k for k in (4, 8, 12, 16)},
                  **{f"BUILDERS_{k}": LAYOUT["BUILDERS"] + k for k in (4, 8, 12)})
    segments, address = [], LAYOUT["DATA"]
    for name, value in (data or {}).items():
        places[name], places[f"{name}_len"] = address, len(value)
        segments.append(f'(data (i32.const {address}) "{wat_string(value)}")')
        address += (len(value) + 7) // 8 * 8
    pages = max(1, -(-address // PAGE))
    places["MEM_END"] = pages * PAGE
    helpers = _HELPERS + (_TEXT if "set_input" in imports else "")
    memory_decl = f'(memory (export "memory") {pages})' if memory else "(memory 1)"
    text = f"""(module
  {_import_decls(imports)}
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  {memory_decl}
  (global $count (mut i32) (i32.const 0))
  {' '.join(segments)}
  {helpers.format_map(places)}
  {extra.format_map(places)}
  (func (export "_start") (local $rc i32) (local $i i32) (local $n i32)
    {body.format_map(places)}
    (call $write (i32.const 2) (i32.const {places['RESULTS']})
          (i32.shl (global.get $count) (i32.const 2)))))
"""
    return Wat(text, places, places["MEM_END"])


@dataclass(frozen=True)
class WatRun:
    result: GuestResult
    values: list[int]       # what the body recorded, in order (i32; witx codes, handles, sizes)
    wat: Wat

    @property
    def stdout(self) -> bytes:
        return self.result.stdout


def decode_values(stderr: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(stderr) // 4}i", stderr[:len(stderr) // 4 * 4]))


def run_wat(body: str, data: Mapping[str, bytes] | None = None, *, host: NnHost,
            imports: Iterable[str] = tuple(ARITY), extra: str = "", memory: bool = True,
            **run_kwargs: Any) -> WatRun:
    wat = wat_guest(body, data, imports, memory=memory, extra=extra)
    result = run_guest(wat.text.encode(), host=host, **run_kwargs)
    assert result.trap is None and result.exit_code == 0, (result.exit_code, result.trap)
    return WatRun(result, decode_values(result.stderr), wat)


# -- WAT snippets for the common flow ----------------------------------------------------------
LOAD_DEFAULT = ("(call $rec (call $load_by_name (i32.const {alias}) (i32.const {alias_len}) "
                "(i32.const {GRAPH})))")
NEW_CONTEXT = ("(call $rec (call $init_execution_context (i32.load (i32.const {GRAPH})) "
               "(i32.const {CTX})))")
SET_PROMPT = ("(call $rec (call $text (i32.load (i32.const {CTX})) (i32.const 0) "
              "(i32.const {prompt}) (i32.const {prompt_len})))")
SET_METADATA = ("(call $rec (call $text (i32.load (i32.const {CTX})) (i32.const 1) "
                "(i32.const {metadata}) (i32.const {metadata_len})))")
COMPUTE = "(call $rec (call $compute (i32.load (i32.const {CTX}))))"
GET_TEXT = ("(call $rec (call $get_output (i32.load (i32.const {CTX})) (i32.const 0) "
            "(i32.const {OUT}) (i32.const {OUT_LEN}) (i32.const {WRITTEN})))"
            "(call $print (i32.const {OUT}) (i32.load (i32.const {WRITTEN})))")
CHAT = "\n".join([LOAD_DEFAULT, NEW_CONTEXT, SET_PROMPT, SET_METADATA, COMPUTE, GET_TEXT])
CHAT_DATA = {"alias": b"default", "prompt": PROMPT, "metadata": METADATA}


class WatKit:
    """The harness in one namespace (tests/adapters/wasm gets it as the ``wat`` fixture)."""

    guest = staticmethod(wat_guest)
    run = staticmethod(run_wat)
    values = staticmethod(decode_values)
    HOST_CONFIG, METADATA, PROMPT, GENERATED_TOKENS = (HOST_CONFIG, METADATA, PROMPT,
                                                       GENERATED_TOKENS)
    LOAD_DEFAULT, NEW_CONTEXT, SET_PROMPT, SET_METADATA = (LOAD_DEFAULT, NEW_CONTEXT,
                                                           SET_PROMPT, SET_METADATA)
    COMPUTE, GET_TEXT, CHAT, CHAT_DATA = COMPUTE, GET_TEXT, CHAT, CHAT_DATA
