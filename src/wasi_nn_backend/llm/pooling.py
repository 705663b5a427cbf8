"""llama.cpp's pooling types by name, both ways: the setting a Context is made with
(context_params.py) and the one it reports (Context.pooling, embeddings.py). A module of its
own so that the context's parameters need not import the embeddings read out of a context."""
from __future__ import annotations

import llama_cpp.llama_cpp as C

from .. import errors

POOLING = {"none": C.LLAMA_POOLING_TYPE_NONE, "mean": C.LLAMA_POOLING_TYPE_MEAN,
           "cls": C.LLAMA_POOLING_TYPE_CLS, "last": C.LLAMA_POOLING_TYPE_LAST}
_NAMES = {number: name for name, number in POOLING.items()}
_NAMES[C.LLAMA_POOLING_TYPE_RANK] = "rank"


def pooling_param(name: str | None) -> int:
    """llama_context_params.pooling_type for a pooling name (None: the model's own)."""
    if name is None:
        return C.LLAMA_POOLING_TYPE_UNSPECIFIED
    if name not in POOLING:
        raise errors.InvalidArgument(f"pooling must be one of {', '.join(POOLING)}, got {name!r}")
    return POOLING[name]


def pooling_name(number: int) -> str:
    return _NAMES.get(int(number), f"type {number}")
