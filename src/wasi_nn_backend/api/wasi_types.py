"""WASI-NN's numbered types (witx / WasmEdge numbering), shared by the edges that speak it: the
function API (wasi_nn/) and the wasm imports. The checks both make live here once:
``check_load_target`` (load's encoding and target) and ``tensor_data`` (what an input tensor
holds), so a guest and a Python caller are refused the same values with the same codes."""
from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from ..errors import InvalidArgument, UnsupportedOperation


class TensorType(IntEnum):
    F16 = 0
    F32 = 1
    F64 = 2
    U8 = 3
    I32 = 4
    I64 = 5


class GraphEncoding(IntEnum):
    AUTODETECT_OR_GGML = 5  # witx autodetect; WIT and WAMR ggml
    GGML = 6                # WasmEdge GGML


class ExecutionTarget(IntEnum):
    CPU = 0
    GPU = 1
    TPU = 2
    AUTO = 3


def check_load_target(encoding: int, target: int) -> None:
    """UnsupportedOperation for an encoding that is not GGML; InvalidArgument for a target
    outside witx's 0..3 (every target runs where the config's n_gpu_layers says)."""
    if encoding not in tuple(GraphEncoding):
        raise UnsupportedOperation(f"graph encoding {encoding} is not GGML (5 or 6)")
    if target not in tuple(ExecutionTarget):
        raise InvalidArgument(f"execution target {target} is not one of 0..3")


def tensor_data(dimensions: Sequence[Any] | None, tensor_type: int, data: bytes) -> bytes:
    """The bytes an input tensor holds: prompts and metadata are U8 (UTF-8 text), cut to the
    size its dimensions give (none or empty: all of ``data``). InvalidArgument otherwise."""
    if tensor_type != TensorType.U8:
        name = TensorType(tensor_type).name if tensor_type in tuple(TensorType) else tensor_type
        raise InvalidArgument(f"tensor type {name!r} is not supported: "
                              "prompts and metadata are U8 (UTF-8 bytes)")
    if not dimensions:
        return data
    size = 1
    for dim in dimensions:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise InvalidArgument(f"a tensor dimension must be an int, not {type(dim).__name__}")
        if dim < 0:
            raise InvalidArgument(f"tensor dimension {dim} is negative")
        size *= dim
    if size > len(data):
        raise InvalidArgument(f"tensor dimensions say {size} bytes; data has {len(data)}")
    return data[:size]
