"""OpenAI tool calls (function calling) on /v1/chat/completions, two ways, chosen by the
model's chat template as llama-server chooses:

- native: the template renders ``tools`` itself (Hermes, Qwen, Llama 3.x, Mistral... templates
  name them). The model answers in its own format and the reply is searched for calls in the
  formats such models write: ``<tool_call>{...}</tool_call>`` blocks, or a reply that is one
  JSON call ``{"name", "arguments" | "parameters"}`` or a list of them (what Mistral's
  ``[TOOL_CALLS]`` and Llama's ``<|python_tag|>`` lead; those markers are control tokens,
  left out of the text, and dropped when they are there).
- generic: the template knows no tools (ChatML...). The functions are described in a system
  message and the reply is held to JSON by a grammar: ``{"tool_call": {...}}``,
  ``{"tool_calls": [...]}`` or ``{"response": ...}`` (llama.cpp's generic format). Tool
  results and earlier calls go to the template as JSON in user and assistant messages.

``tool_choice`` "required" or a named function holds either kind of model to the generic call
shape by the same grammar: a call is sure to come, naming a declared function, with arguments
that match its ``parameters`` schema. A reply that holds no call is content, as it was.
"""
from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ... import errors
from ...config.values import response_format
from .errors import ApiError

MAX_TOOLS = 128
MAX_SCHEMA_DEPTH = 128   # levels of a tool's parameters (walked recursively)
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_LEADS = ("[TOOL_CALLS]", "<|python_tag|>")          # markers a reply may start with
_MARKERS = (_OPEN,) + _LEADS
_LONE = re.compile("[\ud800-\udfff]")
_RESPONSE = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_WORD = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FIRST_KEY = re.compile(r'\s*\{\s*"([^"]*)"')
_HEAD = 256    # a generic reply shows its first key within this (the grammar bounds spaces)
_ID_CHARS = string.ascii_letters + string.digits
_RANDOM = random.SystemRandom()
_BLOCK = re.compile(re.escape(_OPEN) + r"(.*?)(?:" + re.escape(_CLOSE) + r"|$)", re.DOTALL)


@dataclass(frozen=True)
class Tools:
    """A request's tools, checked: the functions as sent, and what may be called."""

    functions: tuple[dict[str, Any], ...]     # {"name", "description"?, "parameters"?}
    choice: str = "auto"                       # "auto" | "required" | one function's name
    parallel: bool = True
    legacy: bool = False     # asked as `functions`: answered as one `function_call`

    @property
    def names(self) -> set[str]:
        return {f["name"] for f in self.functions}


# ---- the request -------------------------------------------------------------------------

def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


def _legacy(body: dict[str, Any]) -> tuple[Any, Any, bool]:
    """(tools, tool_choice, legacy) of a body: OpenAI's deprecated ``functions`` and
    ``function_call`` read as tools of one call, when ``tools`` is not given."""
    functions = body.get("functions")
    if body.get("tools") is not None or functions is None:
        return body.get("tools"), body.get("tool_choice"), False
    if not isinstance(functions, list):
        raise _bad("'functions' must be a list of functions", "functions", "invalid_type")
    choice = body.get("function_call")
    if isinstance(choice, dict):
        choice = {"type": "function", "function": choice}
    return [{"type": "function", "function": f} if isinstance(f, dict) else f
            for f in functions], choice, True


def parse_tools(body: dict[str, Any]) -> Tools | None:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of a chat request (or the
    deprecated ``functions`` and ``function_call``); None when no call may be made (no tools,
    or tool_choice "none")."""
    tools, choice, legacy = _legacy(body)
    asked = "function_call" if legacy else "tool_choice"
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("'parallel_tool_calls' must be true or false", "parallel_tool_calls",
                   "invalid_type")
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise _bad("'tool_choice' needs 'tools'", "tool_choice")
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise _bad(f"'tools' must be a list of at most {MAX_TOOLS} tools", "tools",
                   "invalid_type")
    functions = tuple(_function(tool, i, legacy) for i, tool in enumerate(tools))
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise _bad("two tools have the same name", "tools")
    if choice is None or choice in ("auto", "required"):
        picked = choice or "auto"
    elif choice == "none":
        return None
    elif isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        picked = choice["function"]["name"]
        if picked not in names:
            raise _bad(f"'{asked}' names {picked!r}, which is not among the "
                       f"{'functions' if legacy else 'tools'}", asked)
    else:
        raise _bad(f"'{asked}' must be \"none\", \"auto\", \"required\" or " + (
            "{\"name\": ...}" if legacy else
            "{\"type\": \"function\", \"function\": {\"name\": ...}}"), asked)
    if legacy:
        return Tools(functions, picked, False, legacy=True)
    return Tools(functions, picked, True if parallel is None else parallel)


def _function(tool: Any, index: int, legacy: bool) -> dict[str, Any]:
    """One tool checked, as {"name", "description"?, "parameters"}; a fault names the field
    as the request spelled it (``tools[i].function.name``, ``functions[i].name``)."""
    where = f"functions[{index}]" if legacy else f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" \
            or not isinstance(tool.get("function"), dict):
        raise _bad(f"'{where}' must be {{\"type\": \"function\", \"function\": {{...}}}}",
                   where, "invalid_type")
    function = tool["function"]
    where = where if legacy else where + ".function"
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _bad(f"'{where}.name' must be 1 to 64 letters, digits, _ . or -",
                   f"{where}.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise _bad(f"'{where}.description' must be a string", f"{where}.description",
                   "invalid_type")
    parameters = function.get("parameters")
    if parameters is not None and (not isinstance(parameters, dict) or _deep(parameters)):
        raise _bad(f"'{where}.parameters' must be a JSON Schema object nesting at most "
                   f"{MAX_SCHEMA_DEPTH} levels", f"{where}.parameters", "invalid_type")
    out: dict[str, Any] = {"name": name}
    if description is not None:
        out["description"] = description
    out["parameters"] = parameters if parameters is not None else {"type": "object"}
    return out


def parse_tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``, checked: [{"id", "type", "function": {"name",
    "arguments" (a JSON text)}}]."""
    if not isinstance(value, list):
        raise _bad(f"'{where}' must be a list", where, "invalid_type")
    calls = []
    for i, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not isinstance(function.get("arguments", ""), str):
            raise _bad(f"'{where}[{i}]' must be {{\"id\", \"type\": \"function\", "
                       "\"function\": {\"name\", \"arguments\"}}", f"{where}[{i}]",
                       "invalid_type")
        calls.append({"id": str(call.get("id") or ""), "type": "function",
                      "function": {"name": function["name"],
                                   "arguments": function.get("arguments", "")}})
    return calls


# ---- the prompt --------------------------------------------------------------------------

def is_native(template: str | None, tools: Tools | None = None,
              overrides: dict[str, Any] | None = None) -> bool:
    """Whether the tools go to the chat template (None: the ChatML default, which takes
    none): when it renders them itself, unless JSON output is asked beside them, which
    only the generic reply holds together with calls (llama.cpp's choice too)."""
    if template is None or "tools" not in template:
        return False
    if tools is None or overrides is None:
        return True
    shape = overrides.get("response_format")
    return not (overrides.get("json_schema") or isinstance(shape, dict)
                and shape.get("type") in ("json_object", "json_schema"))


def _deep(schema: Any, limit: int = MAX_SCHEMA_DEPTH) -> bool:
    """Whether a JSON value nests deeper than ``limit`` (walked without recursion)."""
    level = [schema]
    for _ in range(limit + 1):
        level = [v for item in level for v in (
            item.values() if isinstance(item, dict) else item if isinstance(item, list)
            else ())]
        if not level:
            return False
    return True


def _arguments(text: str) -> Any:
    """A call's arguments as templates want them (an object, as transformers passes them),
    the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _native_messages(messages: list[dict[str, Any]], objects: bool) -> list[dict[str, Any]]:
    """Earlier calls with their arguments as objects (as transformers passes them) or as the
    JSON text they came as (templates that concatenate them: functionary's)."""
    if not objects:
        return messages
    return [{**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": _arguments(
        c["function"]["arguments"])}} for c in m["tool_calls"]]} if m.get("tool_calls") else m
        for m in messages]


def _variants(messages: list[dict[str, Any]], tools: Tools | None, native: bool
              ) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]]:
    """(messages, tools) to render, best first; the next is tried when a template refuses
    one (the way llama.cpp probes a template's capabilities)."""
    has_calls = any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if tools is None and not has_calls:
        return [(messages, None)]
    if native:
        functions = None if tools is None else [
            {"type": "function", "function": {"description": "", **f}}   # templates read it
            for f in tools.functions]
        return [(_native_messages(messages, objects), functions) for objects in (True, False)]
    out = [_generic_message(m) for m in messages]
    if tools is None:
        return [(out, None)]
    text = _instructions(tools)
    if out and out[0]["role"] == "system":
        return [([{**out[0], "content": out[0]["content"] + "\n\n" + text}] + out[1:], None)]
    first_user = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
    variants = [([{"role": "system", "content": text}] + out, None)]
    if first_user is not None:   # a template without a system role (Gemma's)
        merged = list(out)
        merged[first_user] = {**out[first_user],
                              "content": text + "\n\n" + out[first_user]["content"]}
        variants.append((merged, None))
    return variants


def render(render_chat: Callable[..., str], messages: list[dict[str, Any]],
           tools: Tools | None, native: bool) -> str:
    """The conversation through ``render_chat(messages, tools=...)``: native templates get
    the tools, others the generic system message and JSON; the first variant a template
    takes (_variants). Its own error when it takes none."""
    first: errors.InvalidArgument | None = None
    for variant, functions in _variants(messages, tools, native):
        try:
            return render_chat(variant, tools=functions)
        except errors.InvalidArgument as error:
            first = first or error
    assert first is not None
    raise first


def _generic_message(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        result = {"tool_call_id": message.get("tool_call_id", ""),
                  "content": message["content"]}
        if message.get("name"):
            result = {"tool": message["name"], **result}
        return {"role": "user", "content": json.dumps({"tool_response": result},
                                                      ensure_ascii=False)}
    if message.get("tool_calls"):
        calls = [{"name": c["function"]["name"],
                  "arguments": _arguments(c["function"]["arguments"]), "id": c["id"]}
                 for c in message["tool_calls"]]
        reply: dict[str, Any] = {"tool_calls": calls}
        if message["content"]:
            reply = {"response": message["content"], **reply}
        return {"role": "assistant", "content": json.dumps(reply, ensure_ascii=False)}
    return {"role": message["role"], "content": message["content"]}


def _instructions(tools: Tools) -> str:
    functions = [f for f in tools.functions if tools.choice in ("auto", "required")
                 or f["name"] == tools.choice]
    shape = ("`tool_calls` (a list of calls, each {\"name\", \"arguments\"})" if
             _parallel(tools) else "`tool_call` ({\"name\", \"arguments\"}: a call of a tool)")
    answer = (f"Respond in JSON format with {shape}" if tools.choice != "auto" else
              f"Respond in JSON format, either with {shape} or with `response` (your reply "
              "to the user's request)")
    return ("You can call these tools (each with its arguments' JSON Schema):\n"
            + json.dumps(functions, ensure_ascii=False) + "\n" + answer + ".")


# ---- the grammar -------------------------------------------------------------------------

def _parallel(tools: Tools) -> bool:
    return tools.parallel and tools.choice in ("auto", "required")


def _with_refs_under(schema: Any, pointer: str) -> Any:
    """``schema`` with its local $refs made to point under ``pointer`` (where it is put)."""
    if isinstance(schema, dict):
        return {k: (pointer + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#")
                    else _with_refs_under(v, pointer)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_with_refs_under(v, pointer) for v in schema]
    return schema


def grammar_schema(tools: Tools, native: bool, response: Any = None) -> dict[str, Any] | None:
    """The JSON Schema the reply is held to; None when the reply is free (a native template
    and tool_choice "auto"). ``response``: the schema of a generic reply's ``response``
    (response_format), a string by default."""
    if native and tools.choice == "auto":
        return None
    # each function's parameters under $defs, named as the request names them (a schema
    # the grammar cannot take is refused with that name in the message)
    picked = [(i, f) for i, f in enumerate(tools.functions)
              if tools.choice in ("auto", "required") or f["name"] == tools.choice]
    defs = {f"tools[{i}]": _with_refs_under(f["parameters"], f"#/$defs/tools[{i}]")
            for i, f in picked}
    calls = [{"type": "object", "properties": {"name": {"const": f["name"]},
                                               "arguments": {"$ref": f"#/$defs/tools[{i}]"}},
              "required": ["name", "arguments"]} for i, f in picked]
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    call = ({"type": "object", "properties": {"tool_calls": {
                "type": "array", "items": one, "minItems": 1}}, "required": ["tool_calls"]}
            if _parallel(tools) else
            {"type": "object", "properties": {"tool_call": one}, "required": ["tool_call"]})
    if tools.choice != "auto":
        return {**call, "$defs": defs}
    if response is not None:    # response_format's schema, its $refs moved with it
        defs["response"] = _with_refs_under(response, "#/$defs/response")
    answer = {"type": "object", "properties": {"response": {"$ref": "#/$defs/response"}
                                               if response is not None else {"type": "string"}},
              "required": ["response"]}
    return {"anyOf": [call, answer], "$defs": defs}


def constrain(overrides: dict[str, Any], tools: Tools | None, native: bool) -> bool:
    """Hold the reply to the call shape where it must be (grammar_schema), in ``overrides``;
    whether it is held. A response_format or json_schema then shapes the generic reply's
    ``response`` (a forced call has none); a raw grammar cannot be joined to it."""
    if tools is None or (native and tools.choice == "auto"):
        return False
    if "grammar" in overrides:
        raise _bad("'grammar' cannot be used with tools, which need a grammar of their own "
                   "(use response_format or json_schema)", "grammar", "unsupported_value")
    response: Any = None
    if "response_format" in overrides:
        response = response_format(overrides.pop("response_format")) or None
    if "json_schema" in overrides:
        value = overrides.pop("json_schema")
        response = (_loads(value) if value.strip() else None) \
            if isinstance(value, str) else value
    if _deep(response):
        raise _bad(f"the response's JSON schema nests over {MAX_SCHEMA_DEPTH} levels",
                   "response_format")
    overrides["json_schema"] = grammar_schema(tools, native, response)
    return True


# ---- the reply ---------------------------------------------------------------------------

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


def _loads(text: str) -> Any:
    """JSON's value, or None when the text is not JSON (or nests past Python's stack)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _clean(text: str) -> str:
    """A lone UTF-16 half (a JSON ``\\ud800`` escape unpaired) as U+FFFD: it cannot be sent
    as UTF-8."""
    return _LONE.sub("\ufffd", text)


def _scan(text: str, tools: Tools, held: bool) -> tuple[str, list[dict[str, Any]]]:
    """(the reply's text that is not calls, its calls)."""
    names = tools.names
    stripped = text.strip()
    for lead in _LEADS:
        if stripped.startswith(lead):
            stripped = stripped[len(lead):].strip()
    if stripped[:1] in ("{", "["):
        value = _loads(stripped)
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
            value = _loads(match.group(1))
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
            for marker in ("[TOOL_CALLS]", "[ARGS]"):
                if text.startswith(marker, at):
                    at += len(marker)
                    break
            else:
                break
        if at >= len(text):
            return calls or None
        word = _WORD.match(text, at)
        if word is None or word.group(0) not in names:
            return None
        at = word.end()
        at = len(text) - len(text[at:].lstrip())
        if text.startswith("[ARGS]", at):
            at += len("[ARGS]")
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
    word = _WORD.match(head)
    if word is None:
        return "no"
    if word.end() == len(head):
        return "wait" if any(n.startswith(word.group(0)) for n in names) else "no"
    if word.group(0) not in names:
        return "no"
    rest = head[word.end():].lstrip()
    if rest.startswith("[ARGS]"):
        rest = rest[len("[ARGS]"):]
    if not rest or "[ARGS]".startswith(rest):
        return "wait"
    return "hold" if rest[0] == "{" else "no"


def read_reply(text: str, tools: Tools, held: bool) -> Reply:
    """The calls in a whole reply (only the first unless ``parallel_tool_calls``) and the
    rest as content. ``held``: the reply was held to the generic JSON shape by a grammar
    (then ``response`` is the content)."""
    rest, calls = _scan(text, tools, held)
    return Reply(_content(_clean(rest)), calls if tools.parallel else calls[:1])


def _response(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _decoded(raw: str) -> tuple[str, str, bool]:
    """(the text, the raw text left undecoded, whether the string ended) of the inside of a
    JSON string so far: an escape cut short is left for later, UTF-16 pairs are joined, and
    a high half at the end waits for its other half."""
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
        return _clean(text[:-1]), raw[i - 6:] if i >= 6 else raw, closed
    return _clean(text), raw[i:], closed


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
        self.holding = held     # everything from here on goes to parts
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
        decoded, self.raw, _ = _decoded(self.raw + text)   # after its end: nothing more
        self.sent += len(decoded)
        return decoded

    def finish(self) -> Reply:
        """The held text read for calls: the content still to send, and the calls."""
        text = self.kept + "".join(self.parts)
        rest, calls = _scan(text, self.tools, self.held)
        calls = calls if self.tools.parallel else calls[:1]
        rest = _clean(rest)
        if self.answering and not calls:
            return Reply(rest[self.sent:] or None)
        if self.held or not self.started:
            return Reply(_content(rest), calls)
        return Reply(rest or None, calls)
