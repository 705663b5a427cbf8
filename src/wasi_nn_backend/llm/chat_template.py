"""Chat templates: the Jinja templates GGUF models carry, rendered in a sandbox.

llama.cpp's own llama_chat_apply_template is no Jinja engine (it guesses among built-in
formats), so templates are rendered here with jinja2, in the environment Hugging Face
transformers renders them in (``apply_chat_template``), which is what they are written for:
trim_blocks and lstrip_blocks, ``{% break %}``/``{% continue %}``, a ``{% generation %}`` tag,
transformers' ``tojson`` (key order kept, non-ASCII as is, no HTML escaping), and the globals
``raise_exception`` and ``strftime_now``; ``tools`` and ``documents`` are None unless given.
Templates come from model files and callers, neither trusted: the environment is sandboxed, a
``*`` or ``**`` whose result would be huge is refused, and every fault is InvalidArgument with
a one-line message.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .. import errors

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MAX_ITEMS = 1 << 20        # the longest string or list a template's `*` may make
MAX_POW_BITS = 1 << 16     # the largest integer (in bits) a template's `**` may make
_MAX_MESSAGE = 300         # characters of an error message kept


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks the assistant's part with
    it (to find its tokens); rendering only needs the body, in a scope of its own."""
    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` checked before they allocate (a template like
    ``{{ 'a' * 10**10 }}`` would otherwise take gigabytes, ``7 ** 10**8`` minutes)."""
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                        and len(seq) * n > MAX_ITEMS):
                    raise SecurityError(f"a repetition too large: {len(seq)} items x {n} "
                                        f"(at most {MAX_ITEMS} in all)")
        elif (isinstance(left, int) and isinstance(right, int) and right > 0
              and abs(left) > 1 and left.bit_length() * right > MAX_POW_BITS):
            raise SecurityError(f"a power too large: a {left.bit_length()}-bit number "
                                f"** {right} (at most {MAX_POW_BITS} bits)")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _json_default(value: Any) -> Any:
    """What json.dumps cannot write itself: an undefined value is null, an iterator (what
    jinja's ``map`` and ``select`` give) its list, as llama.cpp's minja writes them."""
    if isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, Iterator):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' tojson: json.dumps as is (jinja's own sorts keys and escapes <>&')."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys, default=_json_default)


def _now() -> datetime:
    return datetime.now()


def _strftime_now(fmt: str) -> str:
    return _now().strftime(fmt)


_JINJA = _Environment(trim_blocks=True, lstrip_blocks=True, autoescape=False,
                      extensions=[_GenerationTag, jinja2.ext.loopcontrols])
_JINJA.filters["tojson"] = _tojson
_JINJA.globals["raise_exception"] = _raise_exception
_JINJA.globals["strftime_now"] = _strftime_now
_COMPILED: dict[str, jinja2.Template] = {}


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _fault(exc: Exception) -> errors.InvalidArgument:
    """A person's one-line account of what went wrong in a template."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        text = f"chat template error: {exc.message} (line {exc.lineno})"
    elif isinstance(exc, jinja2.TemplateError):
        text = f"chat template error: {exc.message or type(exc).__name__}"
    else:
        text = f"chat template failed: {type(exc).__name__}: {exc}"
    return errors.InvalidArgument(_one_line(text))


def _check_inputs(messages: Any, tools: Any, documents: Any) -> None:
    if not isinstance(messages, Sequence) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages):
        raise errors.InvalidArgument("messages must be a list of {role: str, content: str}")
    for name, value in (("tools", tools), ("documents", documents)):
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(
                value, Sequence) or not all(isinstance(v, Mapping) for v in value)):
            raise errors.InvalidArgument(f"{name} must be a list of objects")


def render_template(template: str | None, messages: Sequence[Mapping[str, Any]], *,
                    add_generation_prompt: bool, bos_token: str, eos_token: str,
                    tools: Sequence[Mapping[str, Any]] | None = None,
                    documents: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Render a Jinja chat template (ChatML when None); any template fault -> InvalidArgument."""
    _check_inputs(messages, tools, documents)
    source = template if template is not None else CHATML_TEMPLATE
    try:
        compiled = _COMPILED.get(source)
        if compiled is None:
            compiled = _JINJA.from_string(source)
            if len(_COMPILED) < 64:  # bounded: templates can arrive per request
                _COMPILED[source] = compiled
        return compiled.render(messages=[dict(m) for m in messages],
                               tools=None if tools is None else [dict(t) for t in tools],
                               documents=None if documents is None else [
                                   dict(d) for d in documents],
                               add_generation_prompt=bool(add_generation_prompt),
                               bos_token=bos_token, eos_token=eos_token)
    except Exception as exc:  # noqa: BLE001 - the template is foreign code: any fault is its own
        raise _fault(exc) from exc
