"""Guest linear memory, read and written only through bounds checks.

Every pointer a guest passes is an i32 that wasmtime hands us as a signed Python int: it is
masked to u32 (``& 0xFFFFFFFF``) and every access is checked against the memory's size *at the
time of the access*, so a bad pointer or length raises ``InvalidArgument`` (witx 1) and never
an IndexError, a host exception or a trap. A GuestMemory lives for one import call: it holds
the Caller, which wasmtime invalidates when the call returns.
"""
from __future__ import annotations

import struct
from typing import Any

from wasmtime import Memory

from ...errors import InvalidArgument, TooLarge, WasiNnError

U32_MASK = 0xFFFFFFFF
RECORD_PAIR = struct.Struct("<II")        # {u32 ptr; u32 len}: a builder or a string
TENSOR_RECORD = struct.Struct("<IIIII")   # dims_ptr, dims_len, type (low byte), data_ptr, data_len
WITX_MISSING_MEMORY = 3                   # nn_errno missing_memory: the guest exports no memory


class MissingMemory(WasiNnError):
    """Raised when the guest exports no memory named "memory" (witx missing_memory = 3)."""


def u32(value: int) -> int:
    """An i32 parameter as the u32 the guest meant (pointers, lengths, handles, indexes)."""
    return value & U32_MASK


def _length(value: int) -> int:
    # A guest's length arrives as a (possibly negative) i32; a length the host computes
    # (count * 8) may exceed 32 bits and must not wrap.
    return u32(value) if value < 0 else value


class GuestMemory:
    def __init__(self, caller: Any) -> None:
        memory = caller.get("memory")
        if not isinstance(memory, Memory):
            raise MissingMemory("the guest exports no memory named \"memory\"")
        self._caller = caller
        self._memory = memory

    @property
    def size(self) -> int:
        return self._memory.data_len(self._caller)

    def fits(self, ptr: int, length: int) -> bool:
        return u32(ptr) + _length(length) <= self.size

    def check(self, ptr: int, length: int, what: str) -> None:
        """InvalidArgument unless [ptr, ptr + length) lies inside memory."""
        if not self.fits(ptr, length):
            raise InvalidArgument(f"{what}: {_length(length)} bytes at {u32(ptr):#x} are "
                                  f"outside the guest's memory ({self.size} bytes)")

    def read(self, ptr: int, length: int, what: str, *, limit: int | None = None) -> bytes:
        """A copy of [ptr, ptr + length); bounds first (InvalidArgument), then ``limit``
        (TooLarge), so nothing is copied for a request that is refused."""
        ptr, length = u32(ptr), _length(length)
        self.check(ptr, length, what)
        if limit is not None and length > limit:
            raise TooLarge(f"{what} is {length} bytes; this host accepts at most {limit}",
                           needed=length)
        if length == 0:
            return b""
        return bytes(self._memory.get_buffer_ptr(self._caller, length, ptr))  # one copy

    def write(self, ptr: int, data: bytes, what: str) -> None:
        ptr = u32(ptr)
        self.check(ptr, len(data), what)
        if data:
            self._memory.write(self._caller, data, ptr)

    def write_u32(self, ptr: int, value: int, what: str) -> None:
        self.write(ptr, (value & U32_MASK).to_bytes(4, "little"), what)

    def read_pairs(self, ptr: int, count: int, what: str) -> list[tuple[int, int]]:
        """``count`` consecutive {u32 ptr, u32 len} records (a builder array)."""
        raw = self.read(ptr, u32(count) * RECORD_PAIR.size, what)
        return list(RECORD_PAIR.iter_unpack(raw))

    def read_tensor(self, ptr: int) -> tuple[list[int], int, int, int]:
        """The 20-byte tensor record: (dims, type, data_ptr, data_len). The type is the low
        byte at offset 8: guests leave the three padding bytes unspecified."""
        dims_ptr, dims_len, type_word, data_ptr, data_len = TENSOR_RECORD.unpack(
            self.read(ptr, TENSOR_RECORD.size, "tensor record"))
        if dims_len > 8:
            raise InvalidArgument(f"the tensor has {dims_len} dimensions; at most 8 are accepted")
        raw = self.read(dims_ptr, dims_len * 4, "tensor dimensions")
        dims = [dim for (dim,) in struct.iter_unpack("<I", raw)]
        return dims, type_word & 0xFF, data_ptr, data_len
