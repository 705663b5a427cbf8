"""The port's bounded External Term Format decoder (adapters/erlang/etf.py): the values
erlang_py's binary_to_term gives, for every kind of term, and its limits."""
from __future__ import annotations

import random
import struct
import zlib
from typing import Any

import erlang
import pytest

from wasi_nn_backend.adapters.erlang import etf
from wasi_nn_backend.adapters.erlang.etf import NotATerm, TermTooLarge

A, B = erlang.OtpErlangAtom, erlang.OtpErlangBinary
NODE = A("vm@host")
LEAVES = [
    0, 255, 256, -1, 2**31 - 1, -2**31, 2**31, -2**63, 2**70, -(2**800), 1.5, -0.0, 1e300,
    A("ok"), A("é_atom"), A(b"latin1_\xe9"), True, False, None, A("x" * 255),
    B(b""), B(b"bytes\x00\xff"), B(b"\x80", 1), B(b"\xff\xf0", 4), b"charlist", [],
    erlang.OtpErlangPid(NODE, b"\0\0\0\1", b"\0\0\0\2", b"\0\0\0\3"),
    erlang.OtpErlangPid(NODE, b"\0\0\0\1", b"\0\0\0\2", b"\3"),
    erlang.OtpErlangReference(NODE, b"\0\0\0\1" * 3, b"\0\0\0\7"),
    erlang.OtpErlangReference(NODE, b"\0\0\0\1" * 3, b"\7"),
    erlang.OtpErlangReference(NODE, b"\0\0\0\1", b"\7"),
    erlang.OtpErlangPort(NODE, b"\0\0\0\1", b"\0\0\0\7"),
    erlang.OtpErlangPort(NODE, b"\0\0\0\1" * 2, b"\0\0\0\7"),
    erlang.OtpErlangPort(NODE, b"\0\0\0\1", b"\7"),
    erlang.OtpErlangFunction(113, b"w\x05lists" b"w\x03map" b"a\x02"),
]


def random_term(rng: random.Random, depth: int = 0) -> Any:
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(LEAVES)
    kind = rng.randrange(4)
    items = [random_term(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 0:
        return tuple(items)
    if kind == 1:
        return items
    if kind == 2:
        return erlang.OtpErlangList(items + [A("tail")], improper=True)
    return {rng.choice([1, A("k"), B(b"k"), (1, 2), "text"]): item for item in items}


def etf_of(term: Any, compressed: bool = False) -> bytes:
    return erlang.term_to_binary(term, compressed=compressed)


@pytest.mark.parametrize("seed", range(20))
def test_the_values_are_erlang_pys(seed):
    rng = random.Random(seed)
    for _ in range(50):
        data = etf_of(random_term(rng), compressed=rng.random() < 0.2)
        ours, theirs = etf.decode(data, 1 << 20), erlang.binary_to_term(data)
        assert etf_of(ours) == etf_of(theirs), data   # (erlang_py's == fails across types)


def test_map_keys_are_made_hashable_as_erlang_py_does():
    data = b"\x83t\x00\x00\x00\x01" + etf_of((1, [2]))[1:] + etf_of(3)[1:]   # #{{1, [2]} => 3}
    [(key, value)] = etf.decode(data, 1 << 20).items()
    assert isinstance(key[1], erlang.OtpErlangList) and value == 3


def compressed(inner: bytes) -> bytes:
    return b"P" + struct.pack(">I", len(inner)) + zlib.compress(inner)


def test_compressed_terms_share_one_inflation_budget():
    part = compressed(b"m" + struct.pack(">I", 595) + bytes(595))   # inflates to 600 bytes
    pair = b"\x83h\x02" + part + part
    with pytest.raises(TermTooLarge, match="at most 400 more"):
        etf.decode(pair, 1000)
    assert etf.decode(pair, 1200) == (B(bytes(595)), B(bytes(595)))
    with pytest.raises(TermTooLarge, match="inflates to 600 bytes; at most 599"):
        etf.decode(b"\x83" + part, 599)


def test_compressed_terms_nested_in_compressed_terms_count_once_each():
    inner = compressed(b"m" + struct.pack(">I", 95) + bytes(95))     # 100 bytes
    outer = compressed(b"h\x01" + inner)                              # len(inner) + 2
    assert etf.decode(b"\x83" + outer, 100 + len(inner) + 2) == (B(bytes(95)),)
    with pytest.raises(TermTooLarge):
        etf.decode(b"\x83" + outer, 100 + len(inner) + 1)


def test_compressed_terms_nested_in_each_other_count_toward_the_depth_limit():
    """Each compressed wrapper is a level: 3,000 of them (64 KB on the wire) stop at the depth
    limit, not at Python's recursion limit."""
    inner = b"a\x01"
    for _ in range(3000):
        inner = b"P" + struct.pack(">I", len(inner)) + zlib.compress(inner)
    with pytest.raises(NotATerm, match="nested more than 100"):
        etf.decode(b"\x83" + inner, 256 << 20)


@pytest.mark.parametrize("data, error, needle", [
    (b"\x83", NotATerm, "version byte"),
    (b"\x84a\x01", NotATerm, "version byte"),
    (b"\x83a\x01a\x02", NotATerm, "2 bytes follow"),
    (b"\x83l\xff\xff\xff\xffa\x01", NotATerm, "declares 4294967295 elements"),
    (b"\x83t\x00\x00\x00\x02a\x01j", NotATerm, "declares 2 elements"),
    (b"\x83m\x00\x01\x00\x00abc", NotATerm, "ends inside a binary"),
    (b"\x83o\x00\x00\x04\x01\x00" + bytes(1025), TermTooLarge, "1025 bytes; at most 1024"),
    (b"\x83o\x00\x00\x04\x01\x00abc", NotATerm, "ends inside an integer"),
    (b"\x83" + b"h\x01" * 101 + b"a\x01", NotATerm, "nested more than 100"),
    (b"\x83l\x00\x01\x86\xa1" + b"j" * 100_002, TermTooLarge, "more than 100000 terms"),
    (b"\x83R\x00", NotATerm, "atom cache"),
    (b"\x83w\x02\xc3\x28", NotATerm, "not valid UTF-8"),
    (b"\x83d\x01\x00" + b"a" * 256, NotATerm, "256 characters"),
    (b"\x83c" + b"nonsense".ljust(31, b"\0"), NotATerm, "not a number"),
    (b"\x83M\x00\x00\x00\x01\x09\xff", NotATerm, "9 bits"),
    (b"\x83X" + b"a\x01" + bytes(12), NotATerm, "node name must be an atom"),
    (b"\x83y", NotATerm, "tag 121"),
    (b"\x83P\x00\x00\x00\x05" + zlib.compress(b"a\x01"), NotATerm, r"cut short \(2 of 5"),
    (b"\x83P\x00\x00\x00\x01" + zlib.compress(b"a\x01"), TermTooLarge, "past the 1 bytes"),
    (b"\x83P\x00\x00\x00\x02garbage", NotATerm, "not zlib data"),
    (b"\x83P\x00\x00\x00\x00", NotATerm, "0 bytes"),
])
def test_malformed_terms_say_what_is_wrong(data, error, needle):
    with pytest.raises(error, match=needle) as raised:
        etf.decode(data, 1 << 20)
    assert type(raised.value) is error   # TermTooLarge is a NotATerm; tell them apart
