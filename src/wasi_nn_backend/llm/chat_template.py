"""Chat templates: the Jinja templates GGUF models carry, rendered in a sandbox.

llama.cpp's own llama_chat_apply_template is no Jinja engine (it guesses among built-in
formats), so templates are rendered here with jinja2, as llama-server does with its own engine.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .. import errors

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


# Sandboxed: templates come from model files and callers, neither trusted.
_JINJA = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       autoescape=False)
_JINJA.globals["raise_exception"] = _raise_exception
# Some templates (Llama 3) print today's date.
_JINJA.globals["strftime_now"] = lambda fmt: time.strftime(str(fmt))
_COMPILED: dict[str, jinja2.Template] = {}


def render_template(template: str | None, messages: Sequence[Mapping[str, str]], *,
                    add_generation_prompt: bool, bos_token: str, eos_token: str) -> str:
    """Render a Jinja chat template (ChatML when None); any template fault -> InvalidArgument."""
    if not isinstance(messages, Sequence) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages):
        raise errors.InvalidArgument("messages must be a list of {role: str, content: str}")
    source = template if template is not None else CHATML_TEMPLATE
    try:
        compiled = _COMPILED.get(source)
        if compiled is None:
            compiled = _JINJA.from_string(source)
            if len(_COMPILED) < 64:  # bounded: templates can arrive per request
                _COMPILED[source] = compiled
        return compiled.render(messages=[dict(m) for m in messages],
                               add_generation_prompt=bool(add_generation_prompt),
                               bos_token=bos_token, eos_token=eos_token)
    except jinja2.TemplateError as exc:
        raise errors.InvalidArgument(f"chat template error: {exc}") from exc
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise errors.InvalidArgument(f"chat template failed: {exc!r}") from exc
