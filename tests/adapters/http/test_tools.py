"""Tool calls on /v1/chat/completions (adapters/http/tools.py): the request's checks, the
prompt (native templates get ``tools``; others a system message and JSON), the grammar that
forces a call, reading calls out of replies whole and streamed, and the whole path on a
Starlette app over the tiny model (ChatML: the generic way; a Hermes-style template: the
native way)."""
from __future__ import annotations

import contextlib
import json
import random

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from wasi_nn_backend import Backend  # noqa: E402
from wasi_nn_backend.adapters.http.app import create_app  # noqa: E402
from wasi_nn_backend.adapters.http.errors import ApiError  # noqa: E402
from wasi_nn_backend.adapters.http.tool_replies import ToolStream, read_reply  # noqa: E402
from wasi_nn_backend.adapters.http.tools import (  # noqa: E402
    Tools, grammar_schema, is_native, parse_tools, render)
from wasi_nn_backend.errors import InvalidArgument  # noqa: E402
from wasi_nn_backend.llm.chat_template import render_template  # noqa: E402
from wasi_nn_backend.llm.gbnf import schema_to_gbnf  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "unit": {"enum": ["c", "f"]}, "city": {"type": "string", "maxLength": 8}},
        "required": ["unit", "city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "tz": {"$ref": "#/$defs/zone"}}, "required": ["tz"],
        "$defs": {"zone": {"enum": ["utc", "cet"]}}}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMES = {"get_weather", "get_time"}

# a Hermes / Qwen-style template: it renders the tools and the calls itself
HERMES = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n"
    "For each function call, return a json object within <tool_call></tool_call> tags."
    "<|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{% for call in message.tool_calls %}<tool_call>\n{\"name\": \"{{ call.function.name }}\", "
    "\"arguments\": {{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n"
    "{{ message.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CALL_TEXT = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "utc"}}\n</tool_call>'


def _tools(**body) -> Tools:
    tools = parse_tools({"tools": TOOLS, **body})
    assert tools is not None
    return tools


# ---- the request -------------------------------------------------------------------------

@pytest.mark.parametrize("body, param", [
    ({"tools": "x"}, "tools"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
])
def test_bad_tools_name_the_field(body, param):
    with pytest.raises(ApiError) as caught:
        parse_tools(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_tool_choice_forms():
    assert parse_tools({}) is None
    assert parse_tools({"tools": TOOLS, "tool_choice": "none"}) is None
    assert _tools().choice == "auto" and _tools().parallel
    assert _tools(tool_choice="required", parallel_tool_calls=False).parallel is False
    named = _tools(tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choice == "get_time"


# ---- the prompt and the grammar ------------------------------------------------------------

HISTORY = ASK + [
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "a1B2c3D4e", "type": "function",
         "function": {"name": "get_time", "arguments": '{"tz": "utc"}'}}]},
    {"role": "tool", "tool_call_id": "a1B2c3D4e", "name": "get_time", "content": "12:00"}]


def _renderer(template: str | None):
    def chat(messages, tools):
        return render_template(template, messages, add_generation_prompt=True, bos_token="",
                               eos_token="", tools=tools)
    return chat


def test_native_templates_get_the_tools_and_object_arguments():
    assert is_native(HERMES) and not is_native(None)
    text = render(_renderer(HERMES), HISTORY, _tools(), native=True)
    assert '"name": "get_weather"' in text and '"$defs"' in text   # the functions, whole
    assert '"description": ""' in text     # one for each: templates read it unguarded
    assert '<tool_call>\n{"name": "get_time", "arguments": {"tz": "utc"}}' in text
    assert "<tool_response>\n12:00\n</tool_response>" in text


def test_generic_templates_get_a_system_message_and_json():
    text = render(_renderer(None), [{"role": "system", "content": "Be brief."}] + HISTORY,
                  _tools(), native=False)
    turns = [t.split("\n", 1) for t in text.split("<|im_start|>")[1:]]
    assert [role for role, _ in turns] == ["system", "user", "assistant", "user", "assistant"]
    assert turns[0][1].startswith("Be brief.\n\nYou can call") \
        and '"name": "get_weather"' in turns[0][1]
    assert json.loads(turns[2][1].removesuffix("<|im_end|>\n")) == {"tool_calls": [
        {"name": "get_time", "arguments": {"tz": "utc"}, "id": "a1B2c3D4e"}]}
    assert json.loads(turns[3][1].removesuffix("<|im_end|>\n")) == {"tool_response": {
        "tool": "get_time", "tool_call_id": "a1B2c3D4e", "content": "12:00"}}
    # no system message: one is added first
    assert render(_renderer(None), ASK, _tools(), native=False).startswith(
        "<|im_start|>system\nYou can call")


# templates that refuse what others take, after real ones: Gemma's has no system role,
# functionary's concatenates a call's arguments as text, Mistral's wants 9-character ids
NO_SYSTEM = ("{% for m in messages %}{% if m.role == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}"
             "<{{ m.role }}>{{ m.content }}\n{% endfor %}")
TEXT_ARGUMENTS = ("{% for m in messages %}{{ m.role }}: {{ m.content }}{% for c in "
                  "m.tool_calls or [] %}{{ c.function.name + ' ' + c.function.arguments }}"
                  "{% endfor %}\n{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}")


def test_the_first_variant_a_template_takes_is_used():
    text = render(_renderer(NO_SYSTEM), ASK, _tools(), native=False)
    assert text.startswith("<user>You can call these tools") and "What is the weather" in text
    text = render(_renderer(TEXT_ARGUMENTS), HISTORY, _tools(), native=True)
    assert 'get_time {"tz": "utc"}' in text
    with pytest.raises(InvalidArgument, match="System role not supported"):
        render(_renderer(NO_SYSTEM), [{"role": "system", "content": "x"}] + ASK, _tools(),
               native=False)


def test_call_ids_are_nine_letters_and_digits():
    ids = {read_reply(CALL_TEXT, _tools(), False).calls[0]["id"] for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 9 and i.isalnum() for i in ids)


def test_tojson_writes_what_jinja_makes():
    """Templates pipe jinja's map/select results and undefined fields to tojson (as
    llama.cpp's minja writes them: lists and null)."""
    template = ("{{ tools | map(attribute='function') | map(attribute='name') | list | tojson }}"
                "{{ tools | map(attribute='function') | tojson }}"
                "{{ {'a': tools[0].nope} | tojson }}")
    text = render_template(template, ASK, add_generation_prompt=False, bos_token="",
                           eos_token="", tools=TOOLS)
    assert text.startswith('["get_weather", "get_time"]') and text.endswith('{"a": null}')


@pytest.mark.parametrize("choice, native, held", [
    ("auto", True, False), ("auto", False, True), ("required", True, True),
    ("required", False, True), ({"type": "function", "function": {"name": "get_time"}},
                                True, True)])
def test_the_grammar_holds_what_must_be_a_call(choice, native, held):
    schema = grammar_schema(_tools(tool_choice=choice), native)
    assert (schema is not None) == held
    if schema is not None:
        assert schema_to_gbnf(json.dumps(schema))     # converts, $refs moved under $defs
        assert schema["$defs"]["tools[1]"]["properties"]["tz"] == {
            "$ref": "#/$defs/tools[1]/$defs/zone"}


# ---- reading replies ------------------------------------------------------------------------

@pytest.mark.parametrize("text, held, content, calls", [
    ("It is sunny.", False, "It is sunny.", []),
    ("Let me look.\n" + CALL_TEXT, False, "Let me look.\n", [("get_time", {"tz": "utc"})]),
    (CALL_TEXT + "\n" + CALL_TEXT.replace("utc", "cet"), False, None,
     [("get_time", {"tz": "utc"}), ("get_time", {"tz": "cet"})]),
    ('{"name": "get_time", "parameters": {"tz": "cet"}}', False, None,
     [("get_time", {"tz": "cet"})]),                                  # Llama 3.x
    ('[TOOL_CALLS] [{"name": "get_time", "arguments": {"tz": "utc"}}]', False, None,
     [("get_time", {"tz": "utc"})]),                                  # Mistral
    ('get_time{"tz": "utc"}', False, None, [("get_time", {"tz": "utc"})]),   # Mistral's new
    ('[TOOL_CALLS]get_time[ARGS]{"tz": "cet"}[TOOL_CALLS]get_weather[ARGS]'
     '{"unit": "c", "city": "Oslo"}', False, None,
     [("get_time", {"tz": "cet"}), ("get_weather", {"unit": "c", "city": "Oslo"})]),
    ("get_time is noon", False, "get_time is noon", []),
    ('{"name": "unknown", "arguments": {}}', False, '{"name": "unknown", "arguments": {}}', []),
    ("<tool_call>\n{not json}\n</tool_call>", False, "<tool_call>\n{not json}\n</tool_call>",
     []),
    ('{"response": "Hello"}', True, "Hello", []),
    ('{"tool_call": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}',
     True, None, [("get_weather", {"unit": "c", "city": "Paris"})]),
    ('{"tool_calls": [{"name": "get_time", "arguments": {"tz": "utc"}}]}', True, None,
     [("get_time", {"tz": "utc"})]),
    ('{"response": "cut sho', True, "cut sho", []),    # cut by max_tokens: the text so far
    ('{"tool_calls": [{"name": "get_ti', True, '{"tool_calls": [{"name": "get_ti', []),
    (CALL_TEXT + " and <tool_call>{oops}</tool_call>", False, " and <tool_call>{oops}</tool_call>",
     [("get_time", {"tz": "utc"})]),             # a block that is no call stays text
    ('{"response": "bad half \\udc00, pair \\ud83d\\ude00"}', True,
     "bad half \ufffd, pair \U0001f600", []),      # what UTF-8 cannot carry is U+FFFD
    ('<tool_call>{"name": "get_time", "arguments": {"tz": "\\ud800"}}</tool_call>', False,
     None, [("get_time", {"tz": "\ufffd"})]),
    ("[" * 1200, False, "[" * 1200, []),          # nested past Python's stack: text
])
def test_calls_are_read_from_replies(text, held, content, calls):
    reply = read_reply(text, _tools(), held)
    json.dumps(reply.calls, ensure_ascii=False).encode()    # all of it can be sent
    (reply.content or "").encode()
    assert reply.content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in reply.calls] == calls
    assert all(c["type"] == "function" and len(c["id"]) == 9 for c in reply.calls)


@pytest.mark.parametrize("text, held", [
    ("It is sunny today, {mostly}.", False), ("Let me look.\n" + CALL_TEXT, False),
    ("  " + CALL_TEXT, False), ('{"name": "get_time", "parameters": {"tz": "cet"}}', False),
    ("a < b and <tool_ is not a call", False), ('{"response": "Hello"}', True),
    ("Let me look.\n" + CALL_TEXT + "\n" + CALL_TEXT + "\n", False),
    ('get_time{"tz": "cet"}', False), ("get_time is noon", False), ("getting there", False),
    ('{ "response" : "caf\\u00e9 \\ud83d\\ude00 \\udc00 \\"q\\" \\\\ end"}', True),
    ('{"response": "cut in \\ud83d', True),
    ('{"tool_call": {"name": "get_time", "arguments": {"tz": "utc"}}}', True)])
def test_a_streamed_reply_reads_as_the_whole_one(text, held):
    """Whatever the pieces, the text let through plus the end equals the whole reply read
    at once, and no piece of a call is ever let through."""
    whole = read_reply(text, _tools(), held)
    rng = random.Random(7)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(8, len(text) - 1))))
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        stream = ToolStream(_tools(), held)
        sent = "".join(stream.feed(piece) for piece in pieces)
        end = stream.finish()
        assert "<tool_call>" not in sent and ('"name"' not in sent)
        assert ((sent + (end.content or "")) or None) == whole.content
        assert [c["function"] for c in end.calls] == [c["function"] for c in whole.calls]
    first = read_reply(CALL_TEXT * 2, _tools(parallel_tool_calls=False), False)
    assert len(first.calls) == 1         # parallel_tool_calls false: the first call only
    answer = ToolStream(_tools(), True)  # a generic reply's response goes out as it comes
    assert [answer.feed(p) for p in ['{"resp', 'onse": "He', "llo \\u00", "e9", '!"}']] \
        == ["", "He", "llo ", "\u00e9", "!"]
    plain = ToolStream(_tools(), False)   # plain text goes through as it comes
    assert plain.feed("Hello") == "Hello" and plain.feed(" there <tool") == " there "


# ---- the whole path ---------------------------------------------------------------------------

@contextlib.contextmanager
def _serving(path: str, template: str | None):
    load: dict = {"model": {"n_ctx": 1024, "n_seq_max": 2, "deterministic": True}}
    if template is not None:
        load["model"]["chat_template"] = template
    backend = Backend({"logging": {"level": "warn"}})
    graph = backend.load(path, load)
    client = TestClient(create_app(backend, {"tiny": graph}))
    with backend, client:
        yield client


@pytest.fixture(params=[None, HERMES], ids=["chatml", "hermes"])
def app(request, tiny_model_path):
    with _serving(tiny_model_path, request.param) as client:
        yield client


@pytest.fixture
def hermes(tiny_model_path):
    with _serving(tiny_model_path, HERMES) as client:
        yield client


def _chat(client: TestClient, **body) -> dict:
    reply = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "tools": TOOLS, "temperature": 0,
        "max_tokens": 400, **body})
    assert reply.status_code == 200, reply.text
    return reply.json()


def _streamed(client: TestClient, **body) -> tuple[str, list[dict], str]:
    """(the content deltas joined, the tool_calls deltas (and function_call ones), the
    finish_reason)."""
    text, calls, finish = "", [], None
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": ASK, "tools": TOOLS, "temperature": 0,
            "max_tokens": 400, "stream": True, **body}) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            text += choice["delta"].get("content") or ""
            calls += choice["delta"].get("tool_calls") or []
            if "function_call" in choice["delta"]:
                calls.append({"function_call": choice["delta"]["function_call"]})
            finish = choice["finish_reason"] or finish
    return text, calls, finish


def _check_call(call: dict, name: str | None = None) -> dict:
    assert call["type"] == "function" and len(call["id"]) == 9
    assert call["function"]["name"] in NAMES and name in (None, call["function"]["name"])
    arguments = json.loads(call["function"]["arguments"])
    if call["function"]["name"] == "get_time":
        assert arguments["tz"] in ("utc", "cet")
    else:
        assert arguments["unit"] in ("c", "f") and len(arguments["city"]) <= 8
    return {"name": call["function"]["name"], "arguments": arguments}


@pytest.mark.parametrize("choice, name", [
    ("required", None), ({"type": "function", "function": {"name": "get_time"}}, "get_time")])
def test_a_forced_call_comes_valid_whole_and_streamed(app, choice, name):
    """tool_choice "required" or a named function: the reply is a call of a declared
    function whose arguments match its schema, the same streamed (the old server ignored
    tools and answered text)."""
    client = app
    done = _chat(client, tool_choice=choice)["choices"][0]
    assert done["finish_reason"] == "tool_calls" and done["message"]["content"] is None
    whole = [_check_call(c, name) for c in done["message"]["tool_calls"]]
    text, deltas, finish = _streamed(client, tool_choice=choice)
    assert finish == "tool_calls" and text == ""
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert [_check_call(d, name) for d in deltas] == whole


def test_a_native_models_own_call_is_read(hermes):
    """A model that writes <tool_call> blocks (held to it here by a grammar): the call is
    read out of the reply, and no piece of it reaches the streamed content."""
    client = hermes
    grammar = "root ::= " + json.dumps(CALL_TEXT)
    done = _chat(client, grammar=grammar)["choices"][0]
    assert done["finish_reason"] == "tool_calls"
    assert [_check_call(c) for c in done["message"]["tool_calls"]] == [
        {"name": "get_time", "arguments": {"tz": "utc"}}]
    text, deltas, finish = _streamed(client, grammar=grammar)
    assert text == "" and finish == "tool_calls"
    assert [_check_call(d) for d in deltas] == [{"name": "get_time", "arguments": {"tz": "utc"}}]


def test_auto_answers_text_or_a_call_and_a_conversation_goes_on(app):
    client = app
    done = _chat(client, max_tokens=30)["choices"][0]
    if done["finish_reason"] == "tool_calls":
        [_check_call(c) for c in done["message"]["tool_calls"]]
    else:
        assert isinstance(done["message"]["content"], str)
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_time", "arguments": '{"tz": "utc"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]
    assert _chat(client, messages=history, tool_choice="none",
                 max_tokens=5)["choices"][0]["message"]["content"] is not None


def test_the_older_functions_api(app):
    """OpenAI's deprecated ``functions`` / ``function_call``: one call, answered as
    ``function_call`` with finish_reason "function_call", whole and streamed; a result comes
    back as a ``function`` message."""
    client = app
    legacy = {"tools": None, "functions": [TIME["function"]],
              "function_call": {"name": "get_time"}}
    done = _chat(client, **legacy)["choices"][0]
    assert done["finish_reason"] == "function_call" and "tool_calls" not in done["message"]
    call = done["message"]["function_call"]
    assert call["name"] == "get_time" and json.loads(call["arguments"])["tz"] in ("utc", "cet")
    text, deltas, finish = _streamed(client, **legacy)
    assert finish == "function_call" and deltas == [{"function_call": call}]
    history = ASK + [{"role": "assistant", "content": None, "function_call": call},
                     {"role": "function", "name": "get_time", "content": "12:00"}]
    assert _chat(client, messages=history, functions=[TIME["function"]], tools=None,
                 max_tokens=5)["choices"][0]["finish_reason"] in ("stop", "length",
                                                                   "function_call")
    reply = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "functions": [{"name": "has space"}]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "functions[0].name"
    reply = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, **legacy, "function_call": {"name": "nope"}})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "function_call"


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "required", "grammar": 'root ::= "x"'}, "grammar"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": ASK + [{"role": "assistant", "tool_calls": [{"id": 1}]}]},
     "messages[1].tool_calls[0]"),
])
def test_bad_tool_requests_are_400s(app, body, param):
    client = app
    reply = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "tools": TOOLS, **body})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param


def test_deep_nesting_is_a_400_not_a_500(app):
    client = app
    deep: dict = {"type": "string"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"a": deep}}
    tool = {"type": "function", "function": {"name": "f", "parameters": deep}}
    reply = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "tools": [tool], "tool_choice": "required"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "tools[0].function.parameters"
    body = ('{"model": "tiny", "messages": ' + "[" * 5000 + "]" * 5000 + "}").encode()
    reply = client.post("/v1/chat/completions", content=body)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"


def test_json_output_beside_tools_takes_the_generic_way(app):
    """response_format with tools: the generic reply holds both (a native reply held to the
    format could not call), and the format's own $refs still resolve."""
    shape = {"type": "json_schema", "json_schema": {"name": "r", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "required": ["a"],
        "$defs": {"x": {"enum": ["yes", "no"]}}}}}
    tools = parse_tools({"tools": TOOLS})
    assert not is_native(HERMES, tools, {"response_format": shape})
    assert is_native(HERMES, tools, {"response_format": {"type": "text"}})
    done = _chat(app, response_format=shape, max_tokens=300)["choices"][0]
    if done["finish_reason"] == "tool_calls":
        [_check_call(c) for c in done["message"]["tool_calls"]]
    else:
        assert done["finish_reason"] == "stop"
        assert json.loads(done["message"]["content"])["a"] in ("yes", "no")


def test_a_parameters_schema_the_grammar_cannot_take_is_a_400(app):
    client = app
    bad = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}
    reply = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "tools": [bad], "tool_choice": "required"})
    assert reply.status_code == 400 and "tools[0]" in reply.json()["error"]["message"]
