"""Argument checks of the function API (wasi_nn/): handles, lengths, indexes, texts, tensors,
builder lists and output buffers. A caller's mistake is InvalidArgument (a wrong type or value)
or InvalidEncoding (text that is not valid Unicode / UTF-8), with a one-line message: never a
Python exception that the API would report as ``unknown``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..api.wasi_types import TensorType, tensor_data
from ..errors import InvalidArgument, InvalidEncoding, TooLarge

BYTES = (bytes, bytearray, memoryview)


@dataclass(frozen=True)
class Tensor:
    dimensions: Sequence[int] | None
    type: TensorType
    data: bytes | bytearray | memoryview | str | None


def handle(value: Any, what: str) -> int:
    if value is None:
        raise InvalidArgument(f"the {what} handle is None")
    return integer(value, f"the {what} handle")


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an int, not {type(value).__name__}")
    return value


def index(value: Any) -> int:
    return integer(value, "the index")


def utf8(text: str, what: str, errors: str = "strict") -> bytes:
    try:
        return text.encode("utf-8", errors)
    except UnicodeEncodeError as error:
        raise InvalidEncoding(f"{what} is not valid Unicode ({error.reason} at "
                              f"position {error.start})") from None


def text(data: Any, length: Any, what: str, *, paths: bool = False) -> str | bytes | None:
    """``data`` (str or bytes) cut to ``length``; a str must be valid Unicode, or for a file
    name (``paths``) what the file system can take (Python spells undecodable bytes of file
    names as lone surrogates U+DC80..U+DCFF)."""
    if data is None:
        return None
    if isinstance(data, BYTES):
        data = bytes(data)
    elif not isinstance(data, str):
        raise InvalidArgument(f"{what} must be str or bytes, not {type(data).__name__}")
    else:
        utf8(data, what, "surrogateescape" if paths else "strict")
    if length is not None:
        length = integer(length, f"the {what} length")
        if length < 0 or length > len(data):
            raise InvalidArgument(f"{what} length {length} is outside 0..{len(data)}")
        data = data[:length]
    return data


def builders(value: Any) -> tuple[bytes, bytes | str | None]:
    """load's builder list: [model bytes] or [model bytes, config JSON]."""
    if isinstance(value, (str, *BYTES)) or not isinstance(value, Sequence):
        raise InvalidArgument(f"the builders must be a list of byte strings, "
                              f"not {type(value).__name__}")
    if not value or value[0] is None:
        raise InvalidArgument("no model bytes (builders[0]) given")
    if not isinstance(value[0], BYTES):
        raise InvalidArgument(f"builders[0] (the model) must be bytes, "
                              f"not {type(value[0]).__name__}")
    config = text(value[1], None, "builders[1] (the config)") if len(value) > 1 else None
    return bytes(value[0]), config


def tensor_bytes(tensor: Any) -> bytes:
    if tensor is None:
        raise InvalidArgument("the tensor is None")
    if isinstance(tensor, str):
        return utf8(tensor, "the input")
    if isinstance(tensor, BYTES):
        return bytes(tensor)
    if not isinstance(tensor, Tensor):
        raise InvalidArgument(f"expected a Tensor, str or bytes, not {type(tensor).__name__}")
    if tensor.data is None:
        raise InvalidArgument("the tensor has no data")
    if isinstance(tensor.data, str):
        data = utf8(tensor.data, "the tensor data")
    elif isinstance(tensor.data, BYTES):
        data = bytes(tensor.data)
    else:
        raise InvalidArgument(f"the tensor data must be bytes or str, "
                              f"not {type(tensor.data).__name__}")
    dimensions = tensor.dimensions
    if dimensions and (isinstance(dimensions, (str, *BYTES))
                       or not isinstance(dimensions, Sequence)):
        raise InvalidArgument(f"tensor dimensions must be a list of ints, "
                              f"not {type(dimensions).__name__}")
    return tensor_data(dimensions, tensor.type, data)


def buffer(out: Any) -> memoryview:
    """The caller's output buffer as writable bytes."""
    if out is None:
        raise InvalidArgument("the output buffer is None")
    try:
        view = memoryview(out)
    except TypeError:
        raise InvalidArgument(f"the output buffer must be a writable buffer (a bytearray), "
                              f"not {type(out).__name__}") from None
    if view.readonly:
        raise InvalidArgument("the output buffer is read-only")
    try:
        return view.cast("B")
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"the output buffer is not plain contiguous memory: {error}"
                              ) from None


def write(view: memoryview, data: bytes) -> int:
    """Copy ``data`` into the caller's buffer (from ``buffer``), or raise TooLarge with the
    size needed (nothing is written)."""
    if len(data) > len(view):
        raise TooLarge(f"the output needs {len(data)} bytes; the buffer holds {len(view)}",
                       needed=len(data))
    view[:len(data)] = data
    return len(data)
