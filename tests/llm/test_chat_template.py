"""Chat templates render as Hugging Face transformers renders them (the Jinja environment GGUF
templates are written for): loop controls, its tojson, raise_exception, strftime_now,
namespace(), trim/lstrip, {% generation %}, tools; real-world templates; faults as
InvalidArgument with a one-line message."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
import textwrap

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.llm import chat_template
from wasi_nn_backend.llm.chat_template import render_template

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why?"}]


def render(template, messages=CHAT, **kwargs):
    kwargs.setdefault("add_generation_prompt", True)
    return render_template(template, messages, bos_token="<s>", eos_token="</s>", **kwargs)


def test_loop_controls():
    template = ("{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
                "{{ m.content }};{% if m.role == 'assistant' %}{% break %}{% endif %}{% endfor %}")
    assert render(template) == "Hi;Hello.;"


def test_tojson_as_transformers_does():
    # Key order kept, non-ASCII as is, no HTML escaping (jinja's own tojson sorts keys and
    # writes \u003c, \u00e9).
    message = {"role": "user", "content": "<café & 'tea'>"}
    assert render("{{ messages[0] | tojson }}", [message]) == json.dumps(
        message, ensure_ascii=False)
    assert render("{{ messages[0] | tojson }}", [message]) == (
        '{"role": "user", "content": "<café & \'tea\'>"}')
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {
        "type": "object", "properties": {"ville": {"type": "string"}}, "required": ["ville"]}}}]
    assert render("{{ tools[0] | tojson(indent=4) }}", tools=tools) == json.dumps(
        tools[0], ensure_ascii=False, indent=4)
    assert render("{{ tools | tojson(separators=(',', ':'), sort_keys=true) }}",
                  tools=tools) == json.dumps(tools, ensure_ascii=False, separators=(",", ":"),
                                             sort_keys=True)


def test_tools_and_documents_default_to_none():
    assert render("{{ tools is none }} {{ documents is none }}") == "True True"
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert render("{% for t in tools %}{{ t.function.name }}{% endfor %}", tools=tools) == "f"


def test_raise_exception_is_invalid_argument_with_one_line():
    with pytest.raises(errors.InvalidArgument, match="roles must alternate") as caught:
        render("{{ raise_exception('roles must alternate\nuser/assistant') }}")
    assert "\n" not in str(caught.value)


def test_strftime_now(monkeypatch):
    monkeypatch.setattr(chat_template, "_now",
                        lambda: datetime.datetime(2024, 7, 26, 13, 5, 9, 120000))
    assert render("{{ strftime_now('%d %b %Y %H:%M:%S.%f') }}") == "26 Jul 2024 13:05:09.120000"


def test_namespace_and_trim_lstrip():
    template = textwrap.dedent("""\
        {% set ns = namespace(found=false, n=0) %}
          {% for m in messages %}
            {% if m.role == 'system' %}
              {% set ns.found = true %}
            {% endif %}
            {% set ns.n = ns.n + 1 %}
          {% endfor %}
        found={{ ns.found }} n={{ ns.n }}
        """)
    assert render(template) == "found=True n=4"    # a last newline is dropped, as there


def test_generation_tag_renders_its_body():
    template = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}"
                "[{{ m.content }}]{% endgeneration %}{% else %}{{ m.content }}{% endif %}"
                "{% endfor %}")
    assert render(template) == "Be brief.Hi[Hello.]Why?"


CHATML = ("{% for message in messages %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_chatml():
    assert render(CHATML) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                              "<|im_start|>user\nHi<|im_end|>\n"
                              "<|im_start|>assistant\nHello.<|im_end|>\n"
                              "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n")
    assert render(None) == render(CHATML)          # the default is ChatML


# Trimmed from Meta's Llama 3.1 template: strftime_now, tools, tojson(indent=4), raise_exception.
LLAMA3 = """\
{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools is not none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""


def test_llama3(monkeypatch):
    monkeypatch.setattr(chat_template, "_now", lambda: datetime.datetime(2024, 7, 26))
    head = "<s><|start_header_id|>system<|end_header_id|>\n\n"
    assert render(LLAMA3) == (
        head + "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Météo"}}
    with_tools = render(LLAMA3, CHAT[:2], tools=[tool])
    assert with_tools == (
        head + "Environment: ipython\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        + json.dumps(tool, ensure_ascii=False, indent=4) + "\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    with pytest.raises(errors.InvalidArgument, match="no first user message"):
        render(LLAMA3, CHAT[:1], tools=[tool])


# Mistral Instruct v0.3-style: an optional system message folded into the first [INST].
MISTRAL = """\
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""


def test_mistral():
    assert render(MISTRAL) == ("<s> [INST] Be brief.\n\nHi [/INST] Hello.</s>"
                               " [INST] Why? [/INST]")
    with pytest.raises(errors.InvalidArgument, match="roles must alternate"):
        render(MISTRAL, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


@pytest.mark.parametrize("template, words", [
    ("{% for m in messages %}", "line 1"),                # malformed: unclosed block
    ("hello\n{% frobnicate %}", "line 2"),                # unknown tag
    ("{{ 1 / 0 }}", "division by zero"),
    ("{{ messages[0].content.nope() }}", "template"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template"),  # the sandbox refuses
    ("{{ messages | tojson(bogus=1) }}", "template"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "template"),  # recursion
])
def test_faults_are_invalid_argument(template, words):
    with pytest.raises(errors.InvalidArgument, match=words) as caught:
        render(template)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


@pytest.mark.parametrize("template", [
    "{{ 'ab' * 500000000 }}",                     # a gigabyte string
    "{{ ('x',) * 500000000 }}",
    "{{ 7 ** 99999999 }}",                        # an integer that takes minutes
])
def test_oversized_results_are_refused(template):
    # In a subprocess: before the limit this allocated gigabytes or ran for minutes.
    code = textwrap.dedent(f"""
        from wasi_nn_backend import errors
        from wasi_nn_backend.llm.chat_template import render_template
        try:
            render_template({template!r}, [], add_generation_prompt=True, bos_token="",
                            eos_token="")
        except errors.InvalidArgument as exc:
            print("refused:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20)
    assert "refused:" in done.stdout and "too large" in done.stdout, done.stdout + done.stderr


def test_model_render_chat_passes_tools(tiny_model):
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    template = "{{ bos_token }}{% for t in tools %}{{ t.function.name }}{% endfor %}"
    assert tiny_model.render_chat(CHAT, template=template, tools=tools) == "<s>lookup"
    with pytest.raises(errors.InvalidArgument, match="tools must be a list"):
        tiny_model.render_chat(CHAT, tools="lookup")
