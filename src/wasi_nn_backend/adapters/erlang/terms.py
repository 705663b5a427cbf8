"""Erlang terms <-> Python values, through erlang_py (the ``erlang`` module on PyPI).

The mapping, both ways (erlang_py's own, pinned here so nobody has to look it up):

    Erlang              Python (decoded)               Python to send
    integer             int                            int
    binary  <<"a">>     OtpErlangBinary(b"a")          binary(b"a")  (a bare bytes or str
                                                       would go out as a *charlist*)
    atom    ok          OtpErlangAtom("ok") (str, or   atom("ok")
                        bytes for a latin-1 atom from
                        an older encoder)
    true / false        True / False                   True / False
    undefined           None                           None
    tuple {A, B}        tuple (a, b)                   tuple
    charlist "ab"       bytes b"ab" (short latin-1     (never sent)
                        lists), else list
    pid, ref, port      OtpErlangPid/Reference/Port    echoed unchanged (request ids)

Decoding is etf.py's (the same values, with limits erlang_py does not have); encoding is
erlang_py's.
"""
from __future__ import annotations

from typing import Any

import erlang

from . import etf
from .etf import NotATerm, TermTooLarge

__all__ = ["NotATerm", "TermTooLarge", "atom", "binary", "atom_name", "binary_value",
           "is_integer", "decode", "encode", "describe", "OK", "ERROR"]

OK = erlang.OtpErlangAtom("ok")
ERROR = erlang.OtpErlangAtom("error")


def atom(name: str) -> erlang.OtpErlangAtom:
    return erlang.OtpErlangAtom(name)


def binary(data: bytes | str) -> erlang.OtpErlangBinary:
    return erlang.OtpErlangBinary(data.encode("utf-8") if isinstance(data, str) else data)


def atom_name(term: Any) -> str | None:
    """The name of an atom term (true/false/undefined included), or None if not an atom."""
    if isinstance(term, bool):
        return "true" if term else "false"
    if term is None:
        return "undefined"
    if isinstance(term, erlang.OtpErlangAtom):
        if isinstance(term.value, str):
            return term.value
        if isinstance(term.value, bytes):  # ATOM_EXT / SMALL_ATOM_EXT are latin-1
            return term.value.decode("latin-1")
    return None  # an atom-cache reference never comes over a port


def binary_value(term: Any) -> bytes | None:
    """The bytes of a binary term, or None if the term is not a (whole-byte) binary."""
    if isinstance(term, erlang.OtpErlangBinary) and term.bits == 8:
        return term.value
    return None


def is_integer(term: Any) -> bool:
    return isinstance(term, int) and not isinstance(term, bool)


def decode(data: bytes, max_inflated: int) -> Any:
    """One term from ``data``; NotATerm (TermTooLarge past a limit), with the reason, for
    anything else. Compressed parts may inflate to ``max_inflated`` bytes in all."""
    try:
        return etf.decode(data, max_inflated)
    except NotATerm:
        raise
    except Exception as error:  # a bug, or erlang_py's types failing on odd values
        raise NotATerm(f"it cannot be decoded ({type(error).__name__}: {error})") from None


def encode(term: Any) -> bytes:
    return erlang.term_to_binary(term)


def describe(term: Any) -> str:
    """What a term is, for error messages: 'a charlist', 'the atom foo', 'an integer'..."""
    name = atom_name(term)
    if name is not None:
        return f"the atom {name}"
    if is_integer(term):
        return "an integer"
    if isinstance(term, erlang.OtpErlangBinary):
        return "a binary" if term.bits == 8 else "a bitstring"
    if isinstance(term, bytes):
        return "a charlist (send a binary: <<\"...\">> or list_to_binary/1)"
    kinds = ((float, "a float"), (tuple, "a tuple"), (list, "a list"), (dict, "a map"),
             (erlang.OtpErlangList, "an improper list"), (erlang.OtpErlangPid, "a pid"),
             (erlang.OtpErlangReference, "a reference"), (erlang.OtpErlangPort, "a port"),
             (erlang.OtpErlangFunction, "a fun"))
    for kind, text in kinds:
        if isinstance(term, kind):
            return text
    return f"a {type(term).__name__}"
