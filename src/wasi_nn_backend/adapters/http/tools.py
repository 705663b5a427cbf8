"""OpenAI tool calls (function calling) on /v1/chat/completions: the request's tools, the
prompt and the grammar (reading the replies: tool_replies.py). Two ways, chosen by the
model's chat template as llama-server chooses:

- native: the template renders ``tools`` itself (Hermes, Qwen, Llama 3.x, Mistral... templates
  name them). The model answers in its own format, read by tool_replies.py.
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
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ... import errors
from ...config.values import response_format
from .errors import ApiError

MAX_TOOLS = 128
MAX_SCHEMA_DEPTH = 128   # levels of a tool's parameters (walked recursively)
_NOT_JSON = object()
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")   # a function's name


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

    def callable(self) -> list[tuple[int, dict[str, Any]]]:
        """(index, function) of those the reply may call: all, or the one tool_choice
        names."""
        return [(i, f) for i, f in enumerate(self.functions)
                if self.choice in ("auto", "required") or f["name"] == self.choice]

    def free(self, native: bool) -> bool:
        """Whether the reply is left free (no grammar): a native template's, on "auto"."""
        return native and self.choice == "auto"


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
    if not isinstance(name, str) or not NAME.fullmatch(name):
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


def json_or(text: str, default: Any) -> Any:
    """The JSON value of ``text``, or ``default`` when it is not JSON (or nests past
    Python's stack): text from clients and models, neither trusted."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return default


def _arguments(text: str) -> Any:
    """A call's arguments as templates want them (an object, as transformers passes them),
    the text itself when it is not JSON."""
    return json_or(text, text)


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
    functions = [f for _, f in tools.callable()]
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
    if tools.free(native):
        return None
    # each function's parameters under $defs, named as the request names them (a schema
    # the grammar cannot take is refused with that name in the message)
    picked = tools.callable()
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


def _schema_text(text: str) -> Any:
    if not text.strip():
        return None
    schema = json_or(text, _NOT_JSON)
    if schema is _NOT_JSON:
        raise _bad("'json_schema' is not a JSON schema", "json_schema")
    return schema


def constrain(overrides: dict[str, Any], tools: Tools | None, native: bool) -> bool:
    """Hold the reply to the call shape where it must be (grammar_schema), in ``overrides``;
    whether it is held. A response_format or json_schema then shapes the generic reply's
    ``response`` (a forced call has none); a raw grammar cannot be joined to it."""
    if tools is None or tools.free(native):
        return False
    if "grammar" in overrides:
        raise _bad("'grammar' cannot be used with tools, which need a grammar of their own "
                   "(use response_format or json_schema)", "grammar", "unsupported_value")
    response: Any = None
    if "response_format" in overrides:
        response = response_format(overrides.pop("response_format")) or None
    if "json_schema" in overrides:
        value = overrides.pop("json_schema")
        response = _schema_text(value) if isinstance(value, str) else value
    if _deep(response):
        raise _bad(f"the response's JSON schema nests over {MAX_SCHEMA_DEPTH} levels",
                   "response_format")
    overrides["json_schema"] = grammar_schema(tools, native, response)
    return True
