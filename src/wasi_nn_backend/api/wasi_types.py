"""WASI-NN's numbered types (witx / WasmEdge numbering), shared by the edges that speak it: the
function API (wasi_nn/) and the wasm imports. ``check_load_target`` is the one check of
``load``'s encoding and target, so a guest's ``preload:`` builder and the function API's
``load`` refuse the same values with the same codes."""
from __future__ import annotations

from enum import IntEnum

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
