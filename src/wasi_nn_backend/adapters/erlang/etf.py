"""External Term Format bytes -> Python values, bounded in time and memory whatever the bytes.

Values are those erlang_py's binary_to_term gives (terms.py has the table), so the port reads
what it read before; unlike it, every length is checked against the bytes that are there
before anything is built, the number of terms, the nesting depth and integer sizes are capped,
and compressed terms (tag 80, at the top or nested) inflate through a limited decompressor
sharing one budget per frame: a zlib bomb costs at most the limit, never its full size.
Atom cache references (only distribution links have an atom cache, never a port) and atoms
that are not valid UTF-8 / latin-1 or longer than 255 characters are refused.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any

import erlang

from ...errors import ErrorCode

VERSION = 131
MAX_TERMS = 100_000        # a request is a handful of terms; its text travels in binaries
MAX_DEPTH = 100
MAX_INTEGER_BYTES = 1024   # 8192-bit integers; converting larger ones costs quadratic time
MAX_ATOM_CHARACTERS = 255  # as Erlang itself


class NotATerm(ValueError):
    """The bytes are not one External Term Format term (``code``: invalid_argument)."""

    code = ErrorCode.INVALID_ARGUMENT


class TermTooLarge(NotATerm):
    """A term, or its inflated form, beyond the limits (``code``: too_large)."""

    code = ErrorCode.TOO_LARGE


def decode(data: bytes, max_inflated: int) -> Any:
    """The one term in ``data`` (version byte first); NotATerm / TermTooLarge with the reason.
    Compressed terms together may inflate to at most ``max_inflated`` bytes."""
    if len(data) < 2 or data[0] != VERSION:
        raise NotATerm("it does not start with the External Term Format version byte 131")
    decoder = _Decoder(memoryview(data), 1, max_inflated)
    term = decoder.term(0)
    if decoder.pos != len(data):
        raise NotATerm(f"{len(data) - decoder.pos} bytes follow the term")
    return term


_UNPACK = {1: struct.Struct(">B").unpack_from, 2: struct.Struct(">H").unpack_from,
           4: struct.Struct(">I").unpack_from}
_INT32 = struct.Struct(">i").unpack_from
_DOUBLE = struct.Struct(">d").unpack_from
_SPECIAL_ATOMS = {b"true": True, b"false": False, b"undefined": None}


class _Decoder:
    def __init__(self, data: memoryview, pos: int, inflate_budget: int) -> None:
        self.data = data
        self.pos = pos
        self.inflate_budget = inflate_budget
        self.terms = 0

    # -- bytes -------------------------------------------------------------------------------
    def need(self, size: int, what: str) -> None:
        left = len(self.data) - self.pos
        if size > left:
            raise NotATerm(f"it ends inside {what} ({size} bytes needed, {left} left)")

    def take(self, size: int, what: str) -> bytes:
        self.need(size, what)
        start = self.pos
        self.pos += size
        return bytes(self.data[start:self.pos])

    def uint(self, size: int, what: str) -> int:
        self.need(size, what)
        (value,) = _UNPACK[size](self.data, self.pos)
        self.pos += size
        return value

    def count(self, size: int, per_item: int, what: str) -> int:
        """An element count, checked against the bytes left (each element takes at least
        ``per_item`` bytes), so a declared 4 billion is refused before anything is built."""
        n = self.uint(size, what)
        left = len(self.data) - self.pos
        if n * per_item > left:
            raise NotATerm(f"{what} declares {n} elements but only {left} bytes follow")
        return n

    # -- terms -------------------------------------------------------------------------------
    def term(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise NotATerm(f"it is nested more than {MAX_DEPTH} deep")
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise TermTooLarge(f"it has more than {MAX_TERMS} terms")
        tag = self.uint(1, "a tag")
        read = _READERS.get(tag)
        if read is None:
            raise NotATerm(f"unknown or unsupported tag {tag} at byte {self.pos - 1}")
        return read(self, depth)

    def sequence(self, n: int, depth: int) -> list[Any]:
        return [self.term(depth + 1) for _ in range(n)]

    def atom(self, size: int, utf8: bool, special: bool = True) -> Any:
        name = self.take(self.uint(size, "an atom"), "an atom")
        if special and name in _SPECIAL_ATOMS:
            return _SPECIAL_ATOMS[name]
        if not utf8:
            if len(name) > MAX_ATOM_CHARACTERS:
                raise NotATerm(f"an atom of {len(name)} characters; at most 255")
            return erlang.OtpErlangAtom(name)
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise NotATerm(f"an atom is not valid UTF-8: {name[:40]!r}") from None
        if len(text) > MAX_ATOM_CHARACTERS:
            raise NotATerm(f"an atom of {len(text)} characters; at most 255")
        return erlang.OtpErlangAtom(text)

    def node(self) -> erlang.OtpErlangAtom:
        """The node name of a pid, port or reference: an atom, never true/false/undefined."""
        tag = self.uint(1, "a node name")
        kinds = {100: (2, False), 115: (1, False), 118: (2, True), 119: (1, True)}
        if tag not in kinds:
            raise NotATerm(f"a node name must be an atom, not tag {tag}")
        return self.atom(*kinds[tag], special=False)

    def integer(self, size: int, depth: int) -> int:
        digits = self.uint(size, "an integer")
        if digits > MAX_INTEGER_BYTES:
            self.need(digits + 1, "an integer")
            raise TermTooLarge(f"an integer of {digits} bytes; at most {MAX_INTEGER_BYTES}")
        sign = self.uint(1, "an integer")
        value = int.from_bytes(self.take(digits, "an integer"), "little")
        return -value if sign else value

    def inflate(self, depth: int) -> Any:
        size = self.uint(4, "a compressed term")
        if size > self.inflate_budget:
            raise TermTooLarge(f"a compressed term inflates to {size} bytes; at most "
                               f"{self.inflate_budget} more are allowed")
        if size == 0:
            raise NotATerm("a compressed term of 0 bytes")
        inflater = zlib.decompressobj()
        try:  # at most one byte more than declared: enough to catch a lie
            plain = inflater.decompress(self.data[self.pos:], size + 1)
        except zlib.error as error:
            raise NotATerm(f"a compressed term is not zlib data ({error})") from None
        if len(plain) > size:
            raise TermTooLarge(f"a compressed term inflates past the {size} bytes it declares")
        if not inflater.eof or len(plain) != size:
            raise NotATerm(f"a compressed term is cut short ({len(plain)} of {size} bytes)")
        self.inflate_budget -= size
        self.pos = len(self.data) - len(inflater.unused_data)
        inner = _Decoder(memoryview(plain), 0, self.inflate_budget)
        inner.terms = self.terms
        term = inner.term(depth + 1)
        if inner.pos != size:
            raise NotATerm(f"{size - inner.pos} bytes follow the compressed term")
        self.terms, self.inflate_budget = inner.terms, inner.inflate_budget
        return term


def _pid(d: _Decoder, tag: int) -> erlang.OtpErlangPid:
    node = d.node()
    id_value, serial = d.take(4, "a pid"), d.take(4, "a pid")
    return erlang.OtpErlangPid(node, id_value, serial, d.take(4 if tag == 88 else 1, "a pid"))


def _port(d: _Decoder, tag: int) -> erlang.OtpErlangPort:
    node = d.node()
    id_value = d.take(8 if tag == 120 else 4, "a port")
    return erlang.OtpErlangPort(node, id_value, d.take(1 if tag == 102 else 4, "a port"))


def _reference(d: _Decoder, tag: int) -> erlang.OtpErlangReference:
    if tag == 101:  # REFERENCE_EXT
        node = d.node()
        id_value = d.take(4, "a reference")
        return erlang.OtpErlangReference(node, id_value, d.take(1, "a reference"))
    words = d.uint(2, "a reference")
    node = d.node()
    creation = d.take(4 if tag == 90 else 1, "a reference")
    return erlang.OtpErlangReference(node, d.take(4 * words, "a reference"), creation)


def _list(d: _Decoder, depth: int) -> Any:
    items = d.sequence(d.count(4, 1, "a list"), depth)
    tail = d.term(depth + 1)
    if isinstance(tail, list) and not tail:  # a proper list (erlang_py's types cannot be
        return items                            # compared with ==: theirs fails on a list)
    items.append(tail)
    return erlang.OtpErlangList(items, improper=True)


def _map(d: _Decoder, depth: int) -> dict:
    pairs = {}
    for _ in range(d.count(4, 2, "a map")):
        key = d.term(depth + 1)
        pairs[_hashable(key)] = d.term(depth + 1)
    return pairs


def _hashable(key: Any) -> Any:
    """A map key as erlang_py makes it: lists, maps and tuples of them made hashable."""
    if isinstance(key, list):
        return erlang.OtpErlangList(key)
    if isinstance(key, dict):
        return erlang.frozendict(key)
    if isinstance(key, tuple):
        return tuple(_hashable(element) for element in key)
    return key


def _float(d: _Decoder) -> float:
    text = d.take(31, "a float").partition(b"\0")[0]
    try:
        return float(text)
    except ValueError:
        raise NotATerm(f"a float that is not a number: {text[:31]!r}") from None


def _bits(d: _Decoder) -> erlang.OtpErlangBinary:
    size = d.uint(4, "a bitstring")
    bits = d.uint(1, "a bitstring")
    if not 1 <= bits <= 8:
        raise NotATerm(f"a bitstring whose last byte has {bits} bits")
    return erlang.OtpErlangBinary(d.take(size, "a bitstring"), bits)


def _export(d: _Decoder) -> erlang.OtpErlangFunction:
    start = d.pos
    d.node(), d.node()  # module and function names: atoms
    if d.uint(1, "a fun") != 97:
        raise NotATerm("a fun's arity must be a small integer")
    d.uint(1, "a fun")
    return erlang.OtpErlangFunction(113, bytes(d.data[start:d.pos]))


def _new_fun(d: _Decoder) -> erlang.OtpErlangFunction:
    size = d.uint(4, "a fun")   # counts itself
    d.pos -= 4
    if size < 4:
        raise NotATerm(f"a fun of {size} bytes")
    return erlang.OtpErlangFunction(112, d.take(size, "a fun"))


def _atom_cache(d: _Decoder, depth: int) -> Any:
    raise NotATerm("an atom cache reference (only distribution links have an atom cache, "
                   "never a port: encode atoms in full)")


_READERS = {
    70: lambda d, _: _DOUBLE(d.take(8, "a float"))[0],
    77: lambda d, _: _bits(d),
    78: _atom_cache, 82: _atom_cache,
    80: lambda d, depth: d.inflate(depth),
    88: lambda d, _: _pid(d, 88), 103: lambda d, _: _pid(d, 103),
    89: lambda d, _: _port(d, 89), 102: lambda d, _: _port(d, 102),
    120: lambda d, _: _port(d, 120),
    90: lambda d, _: _reference(d, 90), 101: lambda d, _: _reference(d, 101),
    114: lambda d, _: _reference(d, 114),
    97: lambda d, _: d.uint(1, "an integer"),
    98: lambda d, _: _INT32(d.take(4, "an integer"))[0],
    99: lambda d, _: _float(d),
    100: lambda d, _: d.atom(2, utf8=False), 115: lambda d, _: d.atom(1, utf8=False),
    118: lambda d, _: d.atom(2, utf8=True), 119: lambda d, _: d.atom(1, utf8=True),
    104: lambda d, depth: tuple(d.sequence(d.count(1, 1, "a tuple"), depth)),
    105: lambda d, depth: tuple(d.sequence(d.count(4, 1, "a tuple"), depth)),
    106: lambda d, _: [],
    107: lambda d, _: d.take(d.uint(2, "a string"), "a string"),
    108: _list,
    109: lambda d, _: erlang.OtpErlangBinary(d.take(d.uint(4, "a binary"), "a binary"), 8),
    110: lambda d, depth: d.integer(1, depth), 111: lambda d, depth: d.integer(4, depth),
    112: lambda d, _: _new_fun(d),
    113: lambda d, _: _export(d),
    116: _map,
}
