"""Chat messages → one prompt, through the checkpoint's own chat template (exported into the artifact).

The template is the one transformers would use: ``chat_template.jinja`` beside the tokenizer, else
``chat_template`` in ``tokenizer_config.json``; it is rendered the way ``apply_chat_template`` renders it
(a sandboxed Jinja environment, ``add_generation_prompt=True``, the special tokens by name).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxformer.artifact.files import confined
from onnxformer.serve.statuses import ErrorKind, ServingError

ROLES = ("system", "user", "assistant", "developer", "tool")


class ChatTemplate:
    def __init__(self, source: str, tokens: dict[str, str]):
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        self.template, self.tokens = env.from_string(source), tokens

    def render(self, messages: list[dict[str, str]]) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return self.template.render(messages=messages, add_generation_prompt=True, **self.tokens)
        except TemplateError as e:  # the template itself refused the conversation (e.g. roles out of order)
            raise ServingError(f"the model's chat template refused these messages: {e}", ErrorKind.BAD_REQUEST) from None


def load_chat_template(directory: Path) -> ChatTemplate | None:
    """The artifact's chat template, or None when the checkpoint had none."""
    config_path = confined(directory, "tokenizer_config.json")
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    jinja = confined(directory, "chat_template.jinja")
    source = jinja.read_text() if jinja.is_file() else config.get("chat_template")
    if isinstance(source, list):  # several named templates: the default one
        source = next((t["template"] for t in source if t.get("name") == "default"), None)
    if not source:
        return None
    tokens = {k: _token(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return ChatTemplate(source, {k: v for k, v in tokens.items() if v is not None})


def _token(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def check_messages(messages: list[Any]) -> list[dict[str, str]]:
    """OpenAI messages as the template expects them: role and string content (a list of text parts is joined)."""
    if not messages:
        raise ServingError('"messages" is empty; send at least one {"role", "content"} message', ErrorKind.BAD_REQUEST)
    out = []
    for i, m in enumerate(messages):
        role, content = m.role, m.content
        if role not in ROLES:
            raise ServingError(f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}", ErrorKind.BAD_REQUEST)
        if isinstance(content, list):
            if any(not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str)
                   for p in content):
                raise ServingError(f"messages[{i}].content: only text parts are supported "
                                   '({"type": "text", "text": ...})', ErrorKind.BAD_REQUEST)
            content = "".join(p["text"] for p in content)
        out.append({"role": role, "content": content or ""})
    return out
