"""What every response carries besides the text: usage (OpenAI's fields, with the cached
prompt tokens) and logprobs in OpenAI's two shapes.

logprobs come from the engine's n_probs: for each generated token, the top-n tokens and their
probabilities (softmax of the raw logits, before sampling). The chosen token's own log
probability is known only when it is among those n (always under greedy decoding); otherwise
it is null, never made up.
"""
from __future__ import annotations

import math
from typing import Any

from ...api import Completion, FinishReason

FINISH = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length",
          FinishReason.TIME: "length"}


def finish_reason(completion: Completion) -> str:
    return FINISH.get(completion.finish_reason, "stop")


def usage(completion: Completion) -> dict[str, Any]:
    generated = len(completion.generated_tokens)
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": generated,
            "total_tokens": completion.prompt_tokens + generated,
            "prompt_tokens_details": {"cached_tokens": completion.reused_tokens}}


def _logprob(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0   # OpenAI's floor for a zero probability


def _rows(completion: Completion, piece: Any) -> list[tuple[str, float | None, list]]:
    """(token text, its logprob or None, [(text, logprob)] top-n) per generated token."""
    rows = []
    for token, probs in zip(completion.generated_tokens, completion.probs):
        top = [(piece(t), _logprob(p)) for t, p in probs]
        own = next((_logprob(p) for t, p in probs if t == token), None)
        rows.append((piece(token), own, top))
    return rows


def chat_logprobs(completion: Completion, piece: Any) -> dict[str, Any]:
    def entry(text: str, logprob: float | None) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
    return {"content": [{**entry(text, own), "top_logprobs": [entry(t, lp) for t, lp in top]}
                        for text, own, top in _rows(completion, piece)]}


def completion_logprobs(completion: Completion, piece: Any) -> dict[str, Any]:
    rows = _rows(completion, piece)
    offsets, offset = [], 0
    for text, _, _ in rows:
        offsets.append(offset)
        offset += len(text)
    return {"tokens": [text for text, _, _ in rows],
            "token_logprobs": [own for _, own, _ in rows],
            "top_logprobs": [dict(top) for _, _, top in rows], "text_offset": offsets}
