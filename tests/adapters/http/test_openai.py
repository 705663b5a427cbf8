"""The server through OpenAI's own Python client: every endpoint, streamed and not, usage,
logprobs, JSON schema output, and the errors (OpenAI's error object, the field named)."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

GREEDY = {"temperature": 0, "max_tokens": 8}


def test_models(client):
    ids = sorted(model.id for model in client.models.list())
    assert ids == ["enc", "tiny"]
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat(client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], **GREEDY)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_stream_equals_the_whole_reply(client):
    messages = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, stream=True,
                                                 stream_options={"include_usage": True},
                                                 **GREEDY))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens \
        == whole.usage.completion_tokens


def test_completions_stream_and_not(client):
    whole = client.completions.create(model="tiny", prompt="Once upon", **GREEDY)
    assert whole.choices[0].text and whole.usage.completion_tokens > 0
    pieces = list(client.completions.create(model="tiny", prompt="Once upon", stream=True,
                                            **GREEDY))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text


def test_a_second_turn_reuses_the_first(client):
    """Stateless clients resend the conversation: turn 2 finds turn 1's session by prefix."""
    messages = [{"role": "user", "content": "A first question about affinity"}]
    first = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "and a second one"}]
    second = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_affinity_key_pins_a_session(client):
    messages = [{"role": "user", "content": "pinned conversation"}]
    first = client.chat.completions.create(model="tiny", messages=messages, user="u1", **GREEDY)
    again = client.chat.completions.create(model="tiny", messages=messages, user="u1", **GREEDY)
    assert again.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1


def test_logprobs(client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], logprobs=True,
        top_logprobs=3, **GREEDY)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == entry.top_logprobs[0].logprob <= 0   # greedy: the top one
    text = client.completions.create(model="tiny", prompt="Hi", logprobs=2, **GREEDY)
    assert len(text.choices[0].logprobs.tokens) == text.usage.completion_tokens


def test_a_completion_prompt_of_token_ids(client, server):
    """/tokenize (llama-server's) gives the ids; a prompt of them answers as the text does."""
    def post(path, **body):
        return httpx.post(server.base_url + path, json={"model": "tiny", **body},
                          headers=server.auth)
    ids = post("/tokenize", content="token ids", add_special=True).json()["tokens"]
    assert post("/detokenize", tokens=ids[1:]).json()["content"].strip() == "token ids"
    # characters the tiny vocabulary spells in bytes, one token each: joined whole
    for text in ("é", "日本", "🙂"):
        split = post("/tokenize", content=text, with_pieces=True).json()["tokens"]
        assert len(split) > 1 and all(isinstance(t["piece"], list) for t in split)
        assert post("/detokenize", tokens=[t["id"] for t in split]).json()["content"] == text
    by_text = client.completions.create(model="tiny", prompt="token ids", **GREEDY)
    by_ids = client.completions.create(model="tiny", prompt=ids, **GREEDY)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids)
    for bad in ([10 ** 9], [-1]):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model="tiny", prompt=bad, **GREEDY)
        assert caught.value.body["param"] == "prompt", caught.value.body
    bad = post("/detokenize", tokens=[1, "x"])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens[1]"


def test_echo_puts_the_prompt_first(client, server):
    plain = client.completions.create(model="tiny", prompt="echo me", **GREEDY)
    echoed = client.completions.create(model="tiny", prompt="echo me", echo=True, **GREEDY)
    assert echoed.choices[0].text == "echo me" + plain.choices[0].text
    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model="tiny", prompt="echo me", echo=True, stream=True, **GREEDY) if chunk.choices)
    assert streamed == echoed.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="x", echo=True, logprobs=1, **GREEDY)
    assert caught.value.body["param"] == "echo"
    ids = httpx.post(server.base_url + "/tokenize", json={"model": "tiny", "content": "café"},
                     headers=server.auth).json()["tokens"]
    by_ids = client.completions.create(model="tiny", prompt=ids, echo=True, **GREEDY)
    assert by_ids.choices[0].text.startswith("café")


def test_streamed_logprobs_come_with_their_chunks(client):
    """Each chunk carries the logprobs of the tokens its text completes (OpenAI's streaming
    shape); together they are the whole reply's, also with a stop string holding text back."""
    for extra in ({}, {"stop": ["e"]}):
        args = dict(model="tiny", messages=[{"role": "user", "content": "stream me"}],
                    logprobs=True, top_logprobs=2, temperature=0, max_tokens=12, **extra)
        whole = client.chat.completions.create(**args)
        rows, text = [], ""
        for chunk in client.chat.completions.create(stream=True, **args):
            choice = chunk.choices[0]
            if choice.delta.content:
                text += choice.delta.content
                assert choice.logprobs is not None and choice.logprobs.content, chunk
            if choice.logprobs is not None:
                rows += choice.logprobs.content
        assert text == whole.choices[0].message.content
        expected = whole.choices[0].logprobs.content
        # the same tokens; the numbers to float rounding (the second request reuses the
        # first one's prompt cache, so its prefill is computed in other chunks)
        assert [(r.token, [t.token for t in r.top_logprobs]) for r in rows] == \
            [(r.token, [t.token for t in r.top_logprobs]) for r in expected]
        assert [r.logprob for r in rows] == pytest.approx([r.logprob for r in expected],
                                                          rel=1e-4)
    # a stop string that never completes holds back every "e" until the next token
    for extra in ({}, {"stop": ["eXq"]}):
        args = dict(model="tiny", prompt="Hi", logprobs=2, temperature=0, max_tokens=16,
                    **extra)
        whole = client.completions.create(**args)
        tokens, offsets = [], []
        for chunk in client.completions.create(stream=True, **args):
            if chunk.choices[0].logprobs is not None:
                tokens += chunk.choices[0].logprobs.tokens
                offsets += chunk.choices[0].logprobs.text_offset
        assert tokens == whole.choices[0].logprobs.tokens
        assert offsets == whole.choices[0].logprobs.text_offset


def test_json_schema_output_parses(client):
    # bounded, so that the tiny random model cannot wander past max_tokens inside a string
    schema = {"type": "object", "properties": {"name": {"enum": ["ada", "alan", "grace"]},
                                               "ok": {"type": "boolean"}},
              "required": ["name", "ok"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "a name"}], temperature=0,
        max_tokens=64, response_format={"type": "json_schema",
                                        "json_schema": {"name": "n", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop"
    parsed = json.loads(reply.choices[0].message.content)
    assert parsed["name"] in schema["properties"]["name"]["enum"]
    assert isinstance(parsed["ok"], bool)
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "json"}], temperature=0,
        max_tokens=256, response_format={"type": "json_object"})
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_tool_calls_through_openais_client(client):
    """OpenAI's client reads our tool calls whole and accumulates them from a stream; the
    conversation goes on with the call and its result."""
    tools = [{"type": "function", "function": {
        "name": "get_time", "description": "The time in a zone",
        "parameters": {"type": "object", "properties": {"tz": {"enum": ["utc", "cet"]}},
                       "required": ["tz"]}}}]
    ask = [{"role": "user", "content": "What time is it?"}]
    reply = client.chat.completions.create(model="tiny", messages=ask, tools=tools,
                                           tool_choice="required", parallel_tool_calls=False,
                                           temperature=0, max_tokens=200)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments)["tz"] in ("utc", "cet")
    with client.chat.completions.stream(model="tiny", messages=ask, tools=tools,
                                        tool_choice="required", parallel_tool_calls=False,
                                        temperature=0, max_tokens=200) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in streamed.message.tool_calls] \
        == [(call.function.name, call.function.arguments)]
    history = ask + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "12:00"}]
    after = client.chat.completions.create(model="tiny", messages=history, tools=tools,
                                           temperature=0, max_tokens=8)
    assert after.choices[0].finish_reason in ("stop", "length", "tool_calls")
    older = client.chat.completions.create(   # the deprecated functions API
        model="tiny", messages=ask, functions=[tools[0]["function"]],
        function_call={"name": "get_time"}, temperature=0, max_tokens=200).choices[0]
    assert older.finish_reason == "function_call"
    assert older.message.function_call.name == "get_time"
    assert json.loads(older.message.function_call.arguments)["tz"] in ("utc", "cet")


def test_embeddings(client):
    result = client.embeddings.create(model="enc", input=["hello", "world"])
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 64 and result.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="enc", input="hello", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)


def test_embeddings_of_a_text_model_are_refused(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="tiny", input="hello")
    assert caught.value.body["code"] == "unsupported_operation"


@pytest.mark.parametrize("field, value", [("temperature", "hot"), ("top_p", 2),
                                          ("max_tokens", -5), ("logit_bias", {"x": 1}),
                                          ("response_format", {"type": "xml"})])
def test_a_bad_field_is_a_400_naming_it(client, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                       extra_body={field: value})
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == field
    assert caught.value.body["type"] == "invalid_request_error"


def test_bad_messages_name_the_message(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}])
    assert caught.value.body["param"] == "messages[0].role"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "model_not_found"


def test_api_key(server):
    import openai as sdk
    wrong = sdk.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(sdk.AuthenticationError):
        wrong.models.list()
    assert httpx.get(server.base_url + "/v1/models").status_code == 401


def test_malformed_json_is_400(server):
    response = httpx.post(server.base_url + "/v1/chat/completions", content=b"{not json",
                          headers=server.auth)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_prompt_over_the_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="word " * 5000, max_tokens=1)
    assert caught.value.body["code"] == "prompt_too_long"
