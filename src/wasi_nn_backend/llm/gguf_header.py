"""Read a GGUF file's header (metadata and tensor table) without loading the model.

Used before a load, to estimate what the model will need (weights, KV cache) and refuse it with
too_large when a memory limit says no; llama.cpp itself would have to map the whole file first.
Pure Python on an mmap: a bad or truncated header is InvalidEncoding, never a crash or a huge
allocation (every count is checked against the bytes left in the file).
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from .lib import check_model_file

# gguf_type: scalar sizes and struct codes (STRING = 8 and ARRAY = 9 are read apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY_VALUES = 4096   # numeric arrays up to this long are kept (per-layer head counts)
_MAX_DIMS = 8
_DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GgufHeader:
    path: str
    version: int
    file_size: int
    tensor_count: int
    data_offset: int                               # where tensor data starts
    metadata: dict[str, Any] = field(repr=False)   # scalars, strings, short numeric arrays
    array_lengths: dict[str, int] = field(repr=False)  # every array key -> its length

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data: what the weights take in memory, give or take padding."""
        return max(self.file_size - self.data_offset, 0)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """``{architecture}.{key}``, e.g. arch_value("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Reader:
    def __init__(self, data: mmap.mmap | bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> errors.InvalidEncoding:
        return errors.InvalidEncoding(f"bad GGUF header in {self.path}: {what} "
                                      f"(at byte {self.pos})")

    def take(self, size: int) -> int:
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail("the file ends inside its header")
        start, self.pos = self.pos, self.pos + size
        return start

    def scalar(self, code: str) -> Any:
        start = self.take(struct.calcsize("<" + code))
        return struct.unpack_from("<" + code, self.data, start)[0]

    def count(self, minimum_item_size: int, what: str) -> int:
        value = self.scalar("Q")
        if value * minimum_item_size > len(self.data) - self.pos:
            raise self.fail(f"{what} count {value} exceeds the file")
        return value

    def string(self) -> str:
        size = self.count(1, "string length")
        start = self.take(size)
        return bytes(self.data[start:start + size]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.count(1, "string length"))


def read_gguf_header(path: str | os.PathLike[str]) -> GgufHeader:
    """ModelNotFound for a missing file, InvalidEncoding for one that is not GGUF or whose
    header is damaged."""
    path = os.fspath(path)
    check_model_file(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                raise errors.InvalidEncoding(f"bad GGUF header in {path}: only {size} bytes")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(_Reader(data, path), size)
    except OSError as exc:
        raise errors.ModelNotFound(f"cannot read model file {path}: {exc.strerror}") from exc


def _parse(reader: _Reader, size: int) -> GgufHeader:
    reader.take(4)  # the magic, checked by check_model_file
    version = reader.scalar("I")
    if version not in (2, 3):
        raise reader.fail(f"GGUF version {version} is not supported (2 or 3)")
    tensor_count = reader.count(8, "tensor")
    kv_count = reader.count(12, "metadata")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = reader.string()
        kind = reader.scalar("I")
        value = _value(reader, kind, key, lengths, depth=0)
        if value is not _SKIPPED:
            metadata[key] = value
    for _ in range(tensor_count):
        reader.skip_string()
        n_dims = reader.scalar("I")
        if n_dims > _MAX_DIMS:
            raise reader.fail(f"a tensor has {n_dims} dimensions")
        reader.take(8 * n_dims + 4 + 8)   # dims, type, offset
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise reader.fail(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-reader.pos // alignment) * alignment
    return GgufHeader(reader.path, version, size, tensor_count, data_offset, metadata, lengths)


_SKIPPED = object()


def _value(reader: _Reader, kind: int, key: str, lengths: dict[str, int], depth: int) -> Any:
    code = _SCALARS.get(kind)
    if code is not None:
        return reader.scalar(code)
    if kind == _STRING:
        return reader.string()
    if kind != _ARRAY or depth > 2:
        raise reader.fail(f"{key!r} has value type {kind}")
    item_kind = reader.scalar("I")
    item_code = _SCALARS.get(item_kind)
    item_size = struct.calcsize("<" + item_code) if item_code else 8
    count = reader.count(item_size, f"{key!r} array")
    if depth == 0:
        lengths[key] = count
    if item_code is not None:
        start = reader.take(count * item_size)
        if depth == 0 and count <= _KEEP_ARRAY_VALUES:
            return list(struct.unpack_from(f"<{count}{item_code}", reader.data, start))
        return _SKIPPED
    for _ in range(count):   # strings (a vocabulary) or nested arrays: walked past
        if item_kind == _STRING:
            reader.skip_string()
        else:
            _value(reader, item_kind, key, lengths, depth + 1)
    return _SKIPPED
