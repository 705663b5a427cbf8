"""Malformed and hostile External Term Format frames sent to the Erlang port: each gets one
error reply with a one-line message, in bounded time and memory, and the port keeps answering.

The corpus is generated (seeded, so the same every run): truncated frames, wrong version
bytes, unknown tags, lengths declared far beyond the data (lists, tuples, maps, binaries,
strings, atoms, bignums, references), huge real bignums, deep nesting, too many terms, atom
cache references (never used over a port), atoms that are not UTF-8 or longer than 255
characters, requests of the wrong shape, unknown ops, an argument of every wrong kind for every
op, zlib bombs (top level and nested) and random byte flips of valid requests. The attackers of
issue 13 sent 450 malformed frames; this sends about 1,200.
"""
from __future__ import annotations

import random
import struct
import time
import zlib
from typing import Any

import erlang
import pytest
from erlang_port import A, B, PortProcess, error_of

from wasi_nn_backend.adapters.erlang.ops import BINARY, INTEGER, OPS

SEED = 13
SECONDS_PER_FRAME = 10    # a reply far slower than this is a hang (each takes milliseconds)
GIB = 1 << 30


# -- raw ETF pieces (no version byte) --------------------------------------------------------
def u8(n: int) -> bytes:
    return struct.pack(">B", n)


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def enc(term: Any) -> bytes:
    """erlang_py's encoding of a term, without the version byte."""
    return erlang.term_to_binary(term)[1:]


def tup(*elements: bytes) -> bytes:
    return b"h" + u8(len(elements)) + b"".join(elements)


def utf8_atom(name: bytes) -> bytes:
    return b"w" + u8(len(name)) + name


def frame(*elements: bytes) -> bytes:
    """A request tuple of raw elements, version byte first."""
    return b"\x83" + tup(*elements)


def bad_request(request_id: bytes) -> bytes:
    """``{Id, cancel, {1, 2}}``: a wrong shape whatever the Id, so the reply is an error."""
    return frame(request_id, utf8_atom(b"cancel"), tup(enc(1), enc(2)))


VALID = [  # requests whose replies are errors or ok, never a generation
    erlang.term_to_binary((1, A("deinit_backend"), (424242,))),
    erlang.term_to_binary((2, A("close_execution_context"), (424242, 7))),
    erlang.term_to_binary(((B("id"), 3), A("cancel"), (99,))),
    erlang.term_to_binary((4, A("run_inference"), (424242, 1, B("Hello there"), B("{}")))),
    erlang.term_to_binary(
        (erlang.OtpErlangReference(A("vm@host"), b"\x00\x01\x02\x03" * 3, b"\x00\x00\x00\x07"),
         A("init_execution_context"), (424242, B("session")))),
]


# -- the corpus: (expected error code or None for any, frame) --------------------------------
def truncated(rng: random.Random) -> list[tuple[str, bytes]]:
    cases = []
    for valid in VALID:
        cuts = sorted(rng.sample(range(len(valid)), min(len(valid), 25)))
        cases += [("invalid_argument", valid[:cut]) for cut in cuts]
    return cases


def version_bytes(rng: random.Random) -> list[tuple[str, bytes]]:
    firsts = {0, 130, 132, 255, *rng.sample(range(256), 30)} - {131}
    return [("invalid_argument", u8(first) + VALID[0][1:]) for first in sorted(firsts)]


KNOWN_TAGS = {70, 77, 78, 80, 82, 88, 89, 90, *range(97, 122)}


def bad_tags(rng: random.Random) -> list[tuple[str, bytes]]:
    cases = []
    for tag in sorted(set(range(256)) - KNOWN_TAGS):
        tail = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
        cases.append(("invalid_argument", b"\x83" + u8(tag) + tail))
        cases.append(("invalid_argument", frame(enc(1), u8(tag) + tail, tup())))
    cases.append(("invalid_argument", b"\x83y" + u8(0)))              # LOCAL_EXT
    cases.append(("invalid_argument", frame(enc(1), b"u" + bytes(40), tup())))  # old FUN_EXT
    return cases


def huge_lengths(rng: random.Random) -> list[tuple[str, bytes]]:
    headers = {  # a term declaring `n` elements / bytes, followed by a few real bytes
        "list": lambda n: b"l" + u32(n) + enc(1) * 3,
        "tuple": lambda n: b"i" + u32(n) + enc(1) * 3,
        "map": lambda n: b"t" + u32(n) + enc(1) * 4,
        "binary": lambda n: b"m" + u32(n) + b"abc",
        "bitstring": lambda n: b"M" + u32(n) + u8(3) + b"abc",
        "string": lambda n: b"k" + u16(min(n, 0xFFFF)) + b"abc",
        "atom": lambda n: b"d" + u16(min(n, 0xFFFF)) + b"abc",
        "utf8 atom": lambda n: b"v" + u16(min(n, 0xFFFF)) + b"abc",
        "small utf8 atom": lambda n: b"w" + u8(min(n, 0xFF)) + b"abc",
        "bignum": lambda n: b"o" + u32(n) + u8(0) + b"abc",
        "small bignum": lambda n: b"n" + u8(min(n, 0xFF)) + u8(0) + b"abc",
        "reference": lambda n: b"Z" + u16(min(n, 0xFFFF)) + utf8_atom(b"vm@host") + bytes(8),
    }
    cases = []
    for make in headers.values():
        for n in (0xFFFFFFFF, 0x7FFFFFFF, 1 << 20, 300, rng.randrange(5, 1 << 16)):
            cases.append(("invalid_argument", b"\x83" + make(n)))
            cases.append(("invalid_argument", frame(make(n), utf8_atom(b"cancel"), tup())))
    return cases


def big_and_deep(rng: random.Random) -> list[tuple[str, bytes]]:
    digits = bytes(rng.randrange(256) for _ in range(100_000)) + b"\x01"
    depth = 100_000
    return [
        ("too_large", bad_request(b"o" + u32(len(digits)) + u8(0) + digits)),  # a 100 KB integer
        # a 255-byte integer is a fine Id: this fails only for the wrong shape
        ("invalid_argument", bad_request(b"n" + u8(255) + u8(1) + bytes(254) + b"\x01")),
        ("invalid_argument", bad_request(b"h\x01" * depth + enc(1))),          # deep tuples
        ("invalid_argument", bad_request(b"l\x00\x00\x00\x01" * depth + enc(1) + b"j" * depth)),
        ("invalid_argument", bad_request((b"t" + u32(1) + enc(1)) * 5000 + enc(1))),  # maps
        ("too_large", bad_request(b"l" + u32(2_000_000) + b"j" * 2_000_000 + b"j")),  # 2M terms
        ("too_large", bad_request(b"i" + u32(500_000) + b"a\x01" * 500_000)),
    ]


def bad_atoms(rng: random.Random) -> list[tuple[str, bytes]]:
    args = tup(enc(424242))
    return [
        ("invalid_argument", frame(enc(1), b"R" + u8(0), args)),       # atom cache reference
        ("invalid_argument", frame(enc(1), b"N" + u8(3), args)),       # erlang_py's cache tag
        ("invalid_argument", frame(enc(1), utf8_atom(b"deinit_\xffbackend"), args)),
        ("invalid_argument", frame(enc(1), utf8_atom(b"deinit_backend\xc3"), args)),
        ("invalid_argument", frame(enc(1), b"v" + u16(2) + b"\xed\xa0", args)),  # a surrogate
        ("invalid_argument", frame(enc(1), b"v" + u16(600) + b"a" * 600, args)),  # > 255 chars
        ("invalid_argument", frame(utf8_atom(b"\x80"), utf8_atom(b"cancel"), tup(enc(1)))),
        ("invalid_argument", frame(enc(1), b"X" + utf8_atom(b"\xff") + bytes(12), args)),  # pid
    ]


def wrong_shapes(rng: random.Random) -> list[tuple[str, bytes]]:
    shapes = [(), (1,), (1, A("cancel")), (1, A("cancel"), (2,), 3), [1, A("cancel"), (2,)],
              {1: A("cancel")}, B("request"), 1.5, 2**64, A("cancel"), b"charlist"]
    cases = [("invalid_argument", erlang.term_to_binary(shape)) for shape in shapes]
    cases += [("invalid_argument", erlang.term_to_binary((5, A("cancel"), args)))
              for args in ([2], B("x"), 3, A("args"), (), (1, 2, 3))]
    return cases


def unknown_ops(rng: random.Random) -> list[tuple[str, bytes]]:
    letters = "abcdefghijklmnopqrstuvwxyz_"
    names = ["".join(rng.choice(letters) for _ in range(rng.randrange(1, 40))) for _ in range(40)]
    names += ["run_inference_", "Cancel", "INIT_BACKEND", "x" * 255, "é", "🙂"]
    cases = [("invalid_argument", erlang.term_to_binary((6, A(name), ()))) for name in names]
    cases += [("invalid_argument", erlang.term_to_binary((6, op, ())))
              for op in (1, B("cancel"), b"cancel", (A("cancel"),), [], None, True)]
    return cases


WRONG_KINDS = [A("atom"), -1, 2**70, 1.5, B("text"), b"charlist", [1, 2], (1,), {1: 2},
               erlang.OtpErlangBinary(b"\x80", 1), True, None,
               erlang.OtpErlangPid(A("vm@host"), b"\0\0\0\1", b"\0\0\0\0", b"\0\0\0\0")]
GOOD = {INTEGER: 424242, BINARY: B("")}


def bad_arguments(rng: random.Random) -> list[tuple[str, bytes]]:
    cases = []
    for op in OPS.values():
        required = op.params[:len(op.params) - op.optional]   # Options: test_port_options.py
        for position, (name, kind) in enumerate(required):
            if kind not in GOOD:
                continue  # any term is fine there
            for wrong in WRONG_KINDS:
                if kind == INTEGER and type(wrong) is int:
                    continue
                if kind == BINARY and isinstance(wrong, erlang.OtpErlangBinary) \
                        and wrong.bits == 8:
                    continue
                args = [GOOD[k] for _, k in required]
                args[position] = wrong
                term = (7, A(op.name), tuple(args))
                cases.append(("invalid_argument", erlang.term_to_binary(term)))
    return cases


def flipped(rng: random.Random) -> list[tuple[str | None, bytes]]:
    cases = []
    for _ in range(150):
        data = bytearray(rng.choice(VALID))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(1, len(data))] = rng.randrange(256)
        cases.append((None, bytes(data)))
    return cases


def compressed(inner: bytes, declared: int | None = None) -> bytes:
    """A COMPRESSED term (tag 80) of ``inner`` (raw ETF, no version byte)."""
    size = len(inner) if declared is None else declared
    return b"P" + u32(size) + zlib.compress(inner)


def zlib_cases(rng: random.Random) -> list[tuple[str, bytes]]:
    request = enc((8, A("cancel"), (1, 2)))   # compressed, but still the wrong shape
    data = zlib.compress(request)
    return [
        ("invalid_argument", b"\x83" + compressed(request, len(request) + 5)),  # size lies
        ("too_large", b"\x83" + compressed(request, len(request) - 1)),
        ("invalid_argument", b"\x83P" + u32(0) + data),
        ("invalid_argument", b"\x83P" + u32(len(request)) + data[:-6]),       # cut short
        ("invalid_argument", b"\x83P" + u32(len(request)) + b"not zlib data at all"),
        ("invalid_argument", b"\x83P" + u32(len(request))),
        ("invalid_argument", b"\x83" + compressed(request) + b"trailing"),
        ("too_large", b"\x83P" + u32(0xFFFFFFFF) + data),
        ("invalid_argument", b"\x83" + compressed(b"\x83" + request)),        # a version inside
    ]


CATEGORIES = {f.__name__: f for f in (
    truncated, version_bytes, bad_tags, huge_lengths, big_and_deep, bad_atoms, wrong_shapes,
    unknown_ops, bad_arguments, flipped, zlib_cases)}


# -- the port --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def port(tmp_path_factory):
    process = PortProcess(tmp_path_factory.mktemp("frames"))
    yield process
    process.cleanup()


MARKER = (A("marker"), B("no frame of the corpus has this Id"))
MARKER_ETF = erlang.term_to_binary(MARKER)


def one_reply_each(port: PortProcess, code: str | None, payload: bytes) -> float:
    """Send one frame, then a `cancel` as a marker: exactly one reply besides the marker's
    (an error with a one-line message, ``code`` when given). Returns the seconds it took."""
    started = time.monotonic()
    port.send_raw(payload)
    port.send((MARKER, A("cancel"), (A("nothing"),)))
    replies = [port.receive(timeout=SECONDS_PER_FRAME) for _ in range(2)]
    # (erlang_py's == fails across types: compare encodings)
    markers = [r for r in replies if erlang.term_to_binary(r[0]) == MARKER_ETF]
    assert len(markers) == 1 and markers[0][1] == "ok", (payload[:64], replies)
    (_, reply), = [r for r in replies if r is not markers[0]]
    if code is None and reply == "ok":
        return time.monotonic() - started  # a flip that made another valid cancel
    got, message = error_of(reply)
    assert code is None or got == code, (payload[:64], reply)
    assert "\n" not in message and 0 < len(message) < 2000, message
    return time.monotonic() - started


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_malformed_frame_gets_one_error_reply(port, category):
    cases = CATEGORIES[category](random.Random(f"{SEED}-{category}"))
    slowest = max(one_reply_each(port, code, payload) for code, payload in cases)
    assert slowest < SECONDS_PER_FRAME
    assert port.proc.poll() is None
    ctx = port.ok("init_backend", B('{"logging":{"level":"error"}}'))  # still answering
    port.ok("deinit_backend", ctx)


def test_the_corpus_is_what_the_docstring_says():
    sizes = {name: len(make(random.Random(f"{SEED}-{name}"))) for name, make in CATEGORIES.items()}
    assert sum(sizes.values()) > 450, sizes


# -- zlib bombs ------------------------------------------------------------------------------
def gib_of_zeros() -> bytes:
    """zlib data (about 1 MB) that inflates to 1 GiB of zeros: one compressed MiB repeated (a
    full flush makes each MiB compress to the same bytes), then the end and the checksum."""
    mib = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(1024):
        checksum = zlib.adler32(mib, checksum)
    return b"\x78\xda" + block * 1024 + deflate.flush() + u32(checksum)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gib_of_zeros()


def test_zlib_bombs_are_refused_before_they_inflate(tmp_path, bomb):
    port = PortProcess(tmp_path)
    try:
        ctx = port.ok("init_backend", B('{"logging":{"level":"error"}}'))
        before = port.status_kb("VmHWM")
        bombs = {
            "honest": b"\x83P" + u32(GIB) + bomb,            # says 1 GiB: refused unread
            "lying": b"\x83P" + u32(1000) + bomb,            # says 1000 bytes
            "nested": frame(enc(1), b"P" + u32(1000) + bomb, tup()),
            "nested honest": frame(enc(1), b"P" + u32(GIB) + bomb, tup()),
        }
        for name, payload in bombs.items():
            started = time.monotonic()
            assert len(payload) < 2 << 20, name
            port.send_raw(payload)
            request_id, reply = port.receive(timeout=SECONDS_PER_FRAME)
            code, message = error_of(reply)
            assert (request_id, code) == (None, "too_large"), (name, message)
            assert time.monotonic() - started < SECONDS_PER_FRAME, name
        grown_mb = (port.status_kb("VmHWM") - before) / 1024
        assert grown_mb < 64, f"the port's peak RSS grew by {grown_mb:.0f} MB"
        port.ok("deinit_backend", ctx)   # and it still answers
    finally:
        port.cleanup()


def test_a_compressed_request_is_answered(port):
    # term_to_binary(Term, [compressed]) is valid ETF: the port reads it like any other
    term = (9, A("init_execution_context"), (424242, B("compressed")))
    port.send_raw(erlang.term_to_binary(term, compressed=True))
    request_id, reply = port.receive()
    assert request_id == 9 and error_of(reply)[0] == "not_found"   # no backend 424242
    nested = frame(enc(10), b"P" + u32(len(enc(A("cancel")))) + zlib.compress(enc(A("cancel"))),
                   tup(enc(11)))
    port.send_raw(nested)
    assert port.receive() == (10, "ok")
