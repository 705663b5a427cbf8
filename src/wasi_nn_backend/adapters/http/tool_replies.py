"""Reading OpenAI tool calls out of a model's reply (the request and the prompt: tools.py):
``<tool_call>{...}</tool_call>`` blocks (Hermes, Qwen), a reply that is one JSON call
``{"name", "arguments" | "parameters"}`` or a list of them (what Mistral's ``[TOOL_CALLS]``
and Llama's ``<|python_tag|>`` lead; those markers are control tokens, left out of the text,
and dropped when they are there), calls written ``name{arguments}`` (Mistral's newer format),
and the generic JSON a grammar held the reply to. Whole (read_reply) or streamed (ToolStream):
text goes out until it could be a call. Whatever a model writes, the result can be sent:
JSON that nests past the stack is text, lone UTF-16 halves are U+FFFD.
"""
from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

from .tools import NAME, Tools, json_or

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_CALLS, _ARGS = "[TOOL_CALLS]", "[ARGS]"            # Mistral's markers
_LEADS = (_CALLS, "<|python_tag|>")                  # markers a reply may start with
_MARKERS = (_OPEN,) + _LEADS
_LONE = re.compile("[\ud800-\udfff]")
_RESPONSE = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_FIRST_KEY = re.compile(r'\s*\{\s*"([^"]*)"')
_HEAD = 256    # a generic reply shows its first key within this (the grammar bounds spaces)
_ID_CHARS = string.ascii_letters + string.digits
_RANDOM = random.SystemRandom()
_BLOCK = re.compile(re.escape(_OPEN) + r"(.*?)(?:" + re.escape(_CLOSE) + r"|$)", re.DOTALL)


@dataclass
class Reply:
    """A reply read for calls: its content (None when there is none) and OpenAI's
    ``tool_calls`` items."""

    content: str | None
    calls: list[dict[str, Any]] = field(default_factory=list)


def _call(item: Any, names: set[str]) -> dict[str, Any] | None:
    """A call in any of the shapes models write, as OpenAI's item; None if it is none."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):       # OpenAI's own shape
        item = item["function"]
    name = item.get("name")
    arguments = item.get("arguments", item.get("parameters"))
    if not isinstance(name, str) or name not in names or arguments is None:
        return None
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": _call_id(), "type": "function",
            "function": {"name": name, "arguments": _clean(arguments)}}


def _call_id() -> str:
    """Nine letters and digits: what Mistral's templates demand of the ids they get back,
    which clients send as they got them."""
    return "".join(_RANDOM.choice(_ID_CHARS) for _ in range(9))


def _calls(value: Any, names: set[str]) -> list[dict[str, Any]] | None:
    """Every call of a parsed JSON value (one call, a list, or the generic shapes), or None
    unless all of it is calls."""
    if isinstance(value, dict) and "tool_calls" in value and isinstance(value["tool_calls"],
                                                                        list):
        value = value["tool_calls"]
    elif isinstance(value, dict) and "tool_call" in value:
        value = [value["tool_call"]]
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, names) for item in items]
    return calls if calls and all(calls) else None      # type: ignore[return-value]


def _content(text: str) -> str | None:
    return text if text.strip() else None


def _clean(text: str) -> str:
    """A lone UTF-16 half (a JSON ``\\ud800`` escape unpaired) as U+FFFD: it cannot be sent
    as UTF-8."""
    return _LONE.sub("\ufffd", text)


def _scan(text: str, tools: Tools, held: bool) -> tuple[str, list[dict[str, Any]]]:
    """(the reply's text that is not calls, cleaned; its calls, only the first unless
    ``parallel_tool_calls``)."""
    rest, calls = _split(text, tools.names, held)
    return _clean(rest), calls if tools.parallel else calls[:1]


def _split(text: str, names: set[str], held: bool) -> tuple[str, list[dict[str, Any]]]:
    """(the reply's text that is not calls, its calls)."""
    stripped = text.strip()
    for lead in _LEADS:
        if stripped.startswith(lead):
            stripped = stripped[len(lead):].strip()
    if stripped[:1] in ("{", "["):
        value = json_or(stripped, None)
        calls = _calls(value, names) if value is not None else None
        if calls:
            response = value.get("response") if isinstance(value, dict) else None
            return _response(response) or "", calls
        if held and isinstance(value, dict) and "response" in value:
            return _response(value["response"]) or "", []
        if held and value is None:            # cut short: the response so far, if one
            opened = _RESPONSE.match(text)
            if opened:
                return _decoded(text[opened.end():])[0], []
    named = _named_calls(stripped, names)
    if named:
        return "", named
    if _OPEN in text:
        calls, rest, at = [], [], 0
        for match in _BLOCK.finditer(text):
            value = json_or(match.group(1), None)
            found = _calls(value, names) if value is not None else None
            rest.append(text[at:match.start()])
            if found:
                calls += found
            else:
                rest.append(match.group(0))   # not a call: its text stays text
            at = match.end()
        rest.append(text[at:])
        return "".join(rest), calls
    return text, []


def _named_calls(text: str, names: set[str]) -> list[dict[str, Any]] | None:
    """Calls written ``name{arguments}`` one after another: Mistral's newer format
    (``[TOOL_CALLS]name[ARGS]{...}``, its control tokens left out of the text or written
    out); None unless all of the text is such calls of declared functions."""
    decoder, calls, at = json.JSONDecoder(), [], 0
    while True:
        while True:
            at = len(text) - len(text[at:].lstrip())
            for marker in (_CALLS, _ARGS):
                if text.startswith(marker, at):
                    at += len(marker)
                    break
            else:
                break
        if at >= len(text):
            return calls or None
        word = NAME.match(text, at)
        if word is None or word.group(0) not in names:
            return None
        at = word.end()
        at = len(text) - len(text[at:].lstrip())
        if text.startswith(_ARGS, at):
            at += len(_ARGS)
        try:
            arguments, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            return None
        call = _call({"name": word.group(0), "arguments": arguments}, names) \
            if isinstance(arguments, dict) else None
        if call is None:
            return None
        calls.append(call)


def _a_name_may_come(head: str, names: set[str]) -> str:
    """Whether a reply's start may be Mistral's ``name{arguments}``: "hold" (it is),
    "wait" (it may be), "no"."""
    word = NAME.match(head)
    if word is None:
        return "no"
    if word.end() == len(head):
        return "wait" if any(n.startswith(word.group(0)) for n in names) else "no"
    if word.group(0) not in names:
        return "no"
    rest = head[word.end():].lstrip()
    if rest.startswith(_ARGS):
        rest = rest[len(_ARGS):]
    if not rest or _ARGS.startswith(rest):
        return "wait"
    return "hold" if rest[0] == "{" else "no"


def read_reply(text: str, tools: Tools, held: bool) -> Reply:
    """The calls in a whole reply (only the first unless ``parallel_tool_calls``) and the
    rest as content. ``held``: the reply was held to the generic JSON shape by a grammar
    (then ``response`` is the content)."""
    rest, calls = _scan(text, tools, held)
    return Reply(_content(rest), calls)


def _response(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _decoded(raw: str) -> tuple[str, str]:
    """(the text, the raw text left undecoded) of the inside of a JSON string so far, up to
    its closing quote: an escape cut short is left for later, UTF-16 pairs are joined, and a
    high half at the end waits for its other half."""
    out, i, n, closed = [], 0, len(raw), False
    while i < n:
        c = raw[i]
        if c == '"':
            closed = True
            break
        if c != "\\":
            j = i
            while j < n and raw[j] not in '"\\':
                j += 1
            out.append(raw[i:j])
            i = j
            continue
        if i + 1 >= n or (raw[i + 1] == "u" and i + 6 > n):
            break
        if raw[i + 1] == "u":
            try:
                out.append(chr(int(raw[i + 2:i + 6], 16)))
            except ValueError:
                out.append(raw[i:i + 6])
            i += 6
        else:
            out.append(_ESCAPES.get(raw[i + 1], raw[i + 1]))
            i += 2
    text = "".join(out).encode("utf-16-le", "surrogatepass").decode("utf-16-le",
                                                                    "surrogatepass")
    if not closed and text and "\ud800" <= text[-1] <= "\udbff":
        return _clean(text[:-1]), raw[i - 6:] if i >= 6 else raw
    return _clean(text), raw[i:]


class ToolStream:
    """A streamed reply's text, let through while it cannot be a call: held from a call
    marker on (or from the start, for a reply that opens with ``{``/``[``), a marker's
    possible beginning held at the end of what came. A reply held to the generic JSON lets
    its ``response`` through as it comes. Read whole at the end (finish)."""

    def __init__(self, tools: Tools, held: bool) -> None:
        self.tools = tools
        self.held = held
        self.started = False    # text other than whitespace was let through
        self.kept = ""          # the text held while it may turn out not to be a call
        self.parts: list[str] = []    # the text held for good (a call, or the JSON)
        self.holding = False    # everything from here on goes to parts (native replies)
        self.raw = ""           # a generic reply's response, not yet decoded
        self.answering = False  # a generic reply is a response (not calls)
        self.sent = 0           # characters of that response let through
        self.head: str | None = ""    # a generic reply's start, until it shows what it is
        self.names = tools.names

    def feed(self, text: str) -> str:
        if self.held:
            return self._response(text)
        if self.holding:
            self.parts.append(text)
            return ""
        self.kept += text
        if not self.started:
            head = self.kept.lstrip()
            if not head:
                return ""                 # whitespace first: wait for what follows
            if head[0] in "{[" or any(head.startswith(m) for m in _LEADS):
                self.holding = True       # a JSON call, or a lead marker and calls
                return ""
            if any(m.startswith(head) for m in _LEADS):
                return ""                 # perhaps a lead marker: wait for more
            named = _a_name_may_come(head, self.names)
            if named == "hold":
                self.holding = True       # name{arguments}: Mistral's calls
                return ""
            if named == "wait":
                return ""
        at = self.kept.find(_OPEN)
        if at >= 0:
            self.holding = True
            return self._send(at)
        keep = max((n for m in _MARKERS for n in range(1, len(m))
                    if self.kept.endswith(m[:n])), default=0)
        return self._send(len(self.kept) - keep)

    def _send(self, upto: int) -> str:
        out = self.kept[:upto]
        if not self.started and not out.strip():
            return ""             # only whitespace so far: a reply of calls alone has none
        self.kept = self.kept[upto:]
        self.started = True
        return out

    def _response(self, text: str) -> str:
        """A generic reply: once it opens with ``{"response": "``, the string's text as it
        is decoded; else nothing until the end."""
        self.parts.append(text)
        if not self.answering:
            if self.head is None:
                return ""             # calls: read at the end
            self.head += text
            opened = _RESPONSE.match(self.head)
            if opened is None:
                key = _FIRST_KEY.match(self.head)
                if (key and key.group(1) != "response") or len(self.head) > _HEAD:
                    self.head = None  # not a response
                return ""
            self.answering, text = True, self.head[opened.end():]
        decoded, self.raw = _decoded(self.raw + text)   # after its end: nothing more
        self.sent += len(decoded)
        return decoded

    def finish(self) -> Reply:
        """The held text read for calls: the content still to send, and the calls."""
        text = self.kept + "".join(self.parts)
        rest, calls = _scan(text, self.tools, self.held)
        if self.answering and not calls:
            return Reply(rest[self.sent:] or None)
        if self.held or not self.started:
            return Reply(_content(rest), calls)
        return Reply(rest or None, calls)
