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

from ...api import Completion, FinishReason, TokenProbs

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


Rows = list[TokenProbs]   # generated tokens, each with its top-n (token, p)


def token_rows(completion: Completion) -> Rows:
    """Every generated token with its top-n probabilities (requests that asked n_probs)."""
    return list(zip(completion.generated_tokens, completion.probs))


def _rows(rows: Rows, piece: Any) -> list[tuple[str, float | None, list]]:
    """(token text, its logprob or None, [(text, logprob)] top-n) per generated token."""
    out = []
    for token, probs in rows:
        top = [(piece(t), _logprob(p)) for t, p in probs]
        own = next((_logprob(p) for t, p in probs if t == token), None)
        out.append((piece(token), own, top))
    return out


def chat_logprobs(rows: Rows, piece: Any) -> dict[str, Any]:
    def entry(text: str, logprob: float | None) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
    return {"content": [{**entry(text, own), "top_logprobs": [entry(t, lp) for t, lp in top]}
                        for text, own, top in _rows(rows, piece)]}


def completion_logprobs(rows: Rows, piece: Any, offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy shape; ``offset``: where these tokens' text starts in the whole
    completion (a streamed chunk's tokens follow the earlier chunks')."""
    described = _rows(rows, piece)
    offsets = []
    for text, _, _ in described:
        offsets.append(offset)
        offset += len(text)
    return {"tokens": [text for text, _, _ in described],
            "token_logprobs": [own for _, own, _ in described],
            "top_logprobs": [dict(top) for _, _, top in described], "text_offset": offsets}
