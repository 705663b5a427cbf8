"""Reading and checking the OpenAI request bodies: every mistake is an ApiError(400) that names
the field (``param``), the way OpenAI's own API answers.

Sampling and stopping fields are the package's request overrides under the names llama.cpp
uses (config.parse_overrides): each is parsed alone against the model's defaults, so that a
bad value names its own field, and the whole set is parsed again by the session. Fields
of OpenAI's API this server has no use for (one choice per request: n=1, suffix, best_of,
store, metadata, service_tier...) are accepted and have no effect. Tools: tools.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...config import parse_overrides
from ...errors import InvalidArgument
from .errors import ApiError
from .tools import Tools, parse_tool_calls, parse_tools

# OpenAI field -> the override key it becomes (same name unless listed)
SAMPLING_FIELDS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "stop": "stop",
    "seed": "seed", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "logit_bias": "logit_bias",
    "repeat_penalty": "repeat_penalty", "typical_p": "typical_p", "grammar": "grammar",
    "ignore_eos": "ignore_eos",
    "json_schema": "json_schema", "response_format": "response_format",
}
MAX_TOP_LOGPROBS = 20
MAX_TOKENIZE = 1 << 20     # tokens /tokenize makes at most (bounded work for any body)


@dataclass
class GenerationRequest:
    """A chat or completion request, checked: what the handlers need."""

    model: str
    overrides: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    top_logprobs: int = 0                 # 0 = no logprobs asked
    messages: list[dict[str, Any]] = field(default_factory=list)   # chat
    tools: Tools | None = None            # chat: the functions the reply may call
    prompt: str | list[int] = ""                 # completions: text or token ids
    user: str | None = None
    echo: bool = False                    # completions: the prompt's text comes first


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not JSON: {error}", None, "invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the body nests too deeply", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", None, "invalid_json")
    return body


def _expect(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str,
            required: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"'{name}' is required", name, "missing_required_parameter")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"'{name}' must be {what}, got {json.dumps(value)[:80]}", name,
                       "invalid_type")
    return value


def _overrides(body: dict[str, Any], base: Any) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, key in SAMPLING_FIELDS.items():
        if body.get(name) is None:
            continue
        try:
            parse_overrides({key: body[name]}, base=base)
        except InvalidArgument as error:
            raise ApiError(400, error.message, name, "invalid_value") from None
        overrides[key] = body[name]
    return overrides


def _common(body: dict[str, Any], base: Any) -> GenerationRequest:
    model = _expect(body, "model", str, "a string", required=True)
    stream = _expect(body, "stream", bool, "true or false") or False
    options = _expect(body, "stream_options", dict, "an object") or {}
    n = _expect(body, "n", int, "an integer")
    if n not in (None, 1):
        raise ApiError(400, "only n=1 is supported", "n", "unsupported_value")
    user = _expect(body, "user", str, "a string")
    return GenerationRequest(model=model, overrides=_overrides(body, base), stream=stream,
                             include_usage=bool(options.get("include_usage")), user=user)


def _top(body: dict[str, Any], name: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"'{name}' must be an integer in [0, {MAX_TOP_LOGPROBS}]", name,
                       "invalid_value")
    return value


def chat_request(body: dict[str, Any], base: Any) -> GenerationRequest:
    request = _common(body, base)
    messages = _expect(body, "messages", list, "a list of messages", required=True)
    if not messages:
        raise ApiError(400, "'messages' must not be empty", "messages", "invalid_value")
    request.messages = [_message(item, index) for index, item in enumerate(messages)]
    request.tools = parse_tools(body)
    if _expect(body, "logprobs", bool, "true or false"):
        request.top_logprobs = max(1, _top(body, "top_logprobs", body.get("top_logprobs")))
    if request.top_logprobs:
        request.overrides["n_probs"] = request.top_logprobs
    return request


def _message(item: Any, index: int) -> dict[str, Any]:
    """A message as the template gets it: role and content (text), with an assistant's
    ``tool_calls`` and a tool result's ``tool_call_id`` and ``name``."""
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise ApiError(400, f"'{where}' must be an object", where, "invalid_type")
    role = item.get("role")
    if role not in ("system", "developer", "user", "assistant", "tool", "function"):
        raise ApiError(400, f"'{where}.role' must be system, user, assistant or tool",
                       f"{where}.role", "invalid_value")
    # developer is OpenAI's newer system; function, its older tool (a result by name)
    message: dict[str, Any] = {
        "role": {"developer": "system", "function": "tool"}.get(role, role),
        "content": _content(item.get("content"), f"{where}.content")}
    if role == "assistant" and item.get("tool_calls"):
        message["tool_calls"] = parse_tool_calls(item["tool_calls"], f"{where}.tool_calls")
    elif role == "assistant" and item.get("function_call"):     # the older single call
        message["tool_calls"] = parse_tool_calls(
            [{"type": "function", "function": item["function_call"]}], f"{where}.function_call")
    if role in ("tool", "function"):
        for key in ("tool_call_id", "name"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"'{where}.{key}' must be a string", f"{where}.{key}",
                               "invalid_type")
            if value is not None:
                message[key] = value
    return message


def _content(content: Any, where: str) -> str:
    """A message's text: a string, or a list of text parts (no images here)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ApiError(400, f"'{where}' must be a string or a list of parts", where,
                       "invalid_type")
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" \
                or not isinstance(part.get("text"), str):
            raise ApiError(400, f"'{where}[{index}]' must be a text part "
                           "({\"type\": \"text\", \"text\": ...})", f"{where}[{index}]",
                           "unsupported_value")
        texts.append(part["text"])
    return "".join(texts)


def completion_request(body: dict[str, Any], base: Any) -> GenerationRequest:
    request = _common(body, base)
    request.prompt = _prompt(body.get("prompt"))
    request.echo = bool(_expect(body, "echo", bool, "true or false"))
    request.top_logprobs = _top(body, "logprobs", body.get("logprobs"))
    if request.top_logprobs:
        if request.echo:
            raise ApiError(400, "echo with logprobs would need the prompt tokens' logprobs, "
                           "which this server does not compute", "echo", "unsupported_value")
        request.overrides["n_probs"] = request.top_logprobs
    return request


def _prompt(prompt: Any) -> str | list[int]:
    """One prompt: a string or an array of token ids, alone or as the only item of a list
    (OpenAI's shapes; several prompts in one request are refused: n=1)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt \
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    if prompt is None:
        raise ApiError(400, "'prompt' is required", "prompt", "missing_required_parameter")
    raise ApiError(400, "'prompt' must be a string or a non-empty array of token ids (one "
                   "prompt per request)", "prompt", "invalid_type")


def embedding_request(body: dict[str, Any]) -> tuple[str, list[str], str]:
    """(model, texts, encoding_format): float lists, or base64 of little-endian float32 (what
    OpenAI's Python client asks for by default)."""
    model = _expect(body, "model", str, "a string", required=True)
    texts = body.get("input")
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, list) or not items \
            or not all(isinstance(t, str) and t for t in items):
        raise ApiError(400, "'input' must be a non-empty string or a list of them", "input",
                       "invalid_value")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'", "encoding_format",
                       "invalid_value")
    return model, items, encoding


def tokenize_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(content, {"flags": tokenize's keywords, "with_pieces": bool}); llama-server's
    defaults: no BOS added, special tokens parsed."""
    content = _expect(body, "content", str, "a string", required=True)
    add = _expect(body, "add_special", bool, "true or false")
    parse = _expect(body, "parse_special", bool, "true or false")
    pieces = _expect(body, "with_pieces", bool, "true or false")
    return content, {"flags": {"add_special": bool(add),
                               "parse_special": True if parse is None else parse},
                     "with_pieces": bool(pieces)}


def detokenize_request(body: dict[str, Any], n_vocab: int) -> list[int]:
    tokens = _expect(body, "tokens", list, "a list of token ids", required=True)
    for index, token in enumerate(tokens):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < n_vocab:
            raise ApiError(400, f"'tokens[{index}]' must be a token id in [0, {n_vocab})",
                           f"tokens[{index}]", "invalid_value")
    return tokens
