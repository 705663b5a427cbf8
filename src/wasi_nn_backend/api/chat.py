"""Chat turns as token lists, so that turn N+1 reuses every token of turn N.

Re-tokenizing a whole rendered conversation gives other tokens for the assistant's replies than
the ones the model generated (any spelling of a text is a valid token list), which would throw
the KV cache away from the first reply on. Instead a turn's prompt is built from the tokens the
sequence really holds, followed by the tokens of the text the template adds after them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.request import Completion

if TYPE_CHECKING:  # the engine hands the Model over; this module never loads one
    from ..llm.model import Model


@dataclass(frozen=True)
class Turn:
    """A finished chat turn: the rendered prompt it ran on and what came of it."""

    prompt_text: str
    completion: Completion


def first_prompt_tokens(model: Model, text: str) -> list[int]:
    """Tokens of a whole rendered conversation (BOS added unless the template wrote it)."""
    bos = model.token_to_piece(model.bos_token, special=True).decode("utf-8", "replace") \
        if model.bos_token >= 0 else ""
    add_special = not (bos and text.startswith(bos))
    return model.tokenize(text, add_special=add_special, parse_special=True)


def continuation_tokens(model: Model, previous: Turn | None, text: str) -> list[int]:
    """Tokens for the rendered conversation ``text`` that extend the previous turn's tokens
    where the text allows it, else the whole text's tokens."""
    if previous is None:
        return first_prompt_tokens(model, text)
    done = previous.completion
    generated = list(done.generated_tokens)
    final = list(done.final_tokens)
    base_text = previous.prompt_text + done.text
    if not text.startswith(base_text) or not generated or final[-len(generated):] != generated:
        return first_prompt_tokens(model, text)
    rest = text[len(base_text):]
    reply_tokens, leftover = _tokens_spelling(model, generated, done.text)
    if len(reply_tokens) == len(generated) - 1 and model.is_eog(generated[-1]):
        marker = model.token_to_piece(generated[-1], special=True).decode("utf-8", "replace")
        if marker and rest.startswith(leftover + marker) and not leftover:
            reply_tokens.append(generated[-1])
            rest = rest[len(marker):]
    prefix = final[:len(final) - len(generated)] + reply_tokens
    tail = leftover + rest
    return prefix + (model.tokenize(tail, add_special=False, parse_special=True) if tail else [])


def _tokens_spelling(model: Model, tokens: list[int], text: str) -> tuple[list[int], str]:
    """The longest head of ``tokens`` whose text is a head of ``text``, and the text after it."""
    raw = b""
    best = 0
    best_len = 0
    encoded = text.encode("utf-8")
    for count, token in enumerate(tokens, start=1):
        if model.is_eog(token):
            break
        raw += model.token_to_piece(token)
        if not encoded.startswith(raw):
            break
        try:
            best_len = len(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue  # ends inside a character: not a clean cut
        best = count
    return tokens[:best], text[best_len:]
