"""Chat prompts from Jinja chat templates, with tools and tool turns.

The model's own template (from its GGUF) is used whenever it can show what the request holds; a template that
never mentions `tools` and `tool_calls` would drop them silently, so such a conversation goes through lokal's
template for the model's prompt format instead (lokal.toolcalls.templates), and a format with no tool calling
is refused rather than rendered without its tools.

Rendering follows Hugging Face's chat-template conventions, as llama-cpp-python's Jinja2ChatFormatter does:
a sandboxed environment with trim_blocks and lstrip_blocks, `raise_exception`, `strftime_now`, a `tojson` that
keeps non-ASCII text, `add_generation_prompt`, bos_token and eos_token.

Tool-call arguments arrive as JSON text (OpenAI's wire form) but templates disagree on what they expect:
Qwen2.5's writes `arguments | tojson`, which turns text into a quoted string, others print them as they are
or join them with `+`. The renderer hands templates a mapping that prints as the original JSON text, so each
of those idioms renders the JSON object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from lokal.engines.base import ChatMessage
from lokal.errors import InvalidRequest
from lokal.toolcalls.families import family_for
from lokal.toolcalls.templates import STOPS, TEMPLATES, WITH_TOOLS, prompt_format


class JsonArguments(dict[str, Any]):
    """A call's arguments: a mapping for templates that walk or `tojson` them, the model's JSON text for those
    that print or concatenate them."""

    def __init__(self, value: Mapping[str, Any], text: str) -> None:
        super().__init__(value)
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __add__(self, other: object) -> str:
        return self.text + str(other)

    def __radd__(self, other: object) -> str:
        return str(other) + self.text


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise InvalidRequest(f"the model's chat template refused these messages: {message}", param="messages")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class IgnoreGeneration(jinja2.ext.Extension):
        """Hugging Face's `{% generation %}` marks training targets; for a prompt it is a plain block."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGeneration, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env


def handles_tools(source: str) -> bool:
    """Whether a template shows both the tools and earlier calls (so a tool conversation survives it)."""
    return bool(re.search(r"\btools\b", source)) and "tool_calls" in source


def _content(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):  # OpenAI content parts: the text ones, in order
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, Mapping) and p.get("type") == "text")
    return str(value)


def _arguments(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value  # not JSON: the template gets the text the client sent
    return JsonArguments(parsed, value) if isinstance(parsed, dict) else value


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages as templates read them: text content, arguments as JsonArguments."""
    out = []
    for m in messages:
        msg = dict(m)
        msg["content"] = _content(m.get("content"))
        calls = m.get("tool_calls")
        if calls:
            msg["tool_calls"] = [_call(c) for c in calls]
        else:
            msg.pop("tool_calls", None)
        out.append(msg)
    return out


def openai_message(m: ChatMessage) -> dict[str, Any]:
    """An engine ChatMessage in the OpenAI shape templates are written for."""
    msg: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        msg["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        msg["name"] = m.name
    return msg


def _call(call: Mapping[str, Any]) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call.get("function"), Mapping) else call
    assert isinstance(fn, Mapping)
    function = {"name": fn.get("name"), "arguments": _arguments(fn.get("arguments", "{}"))}
    return {"id": call.get("id"), "type": call.get("type", "function"), "function": function}


class ChatRenderer:
    """Renders OpenAI-shaped messages (and tools) through a model's chat template."""

    def __init__(self, template: str | None, family: str | None, *, bos: str, eos: str) -> None:
        """template: the GGUF's Jinja chat template (None: the catalog family's built-in template); family: the
        catalog chat_template family name ("chatml", "llama3", "phi4", ...; a tool-call family name such as
        "hermes" is read as its prompt format)."""
        self.template = template
        # No family and no template: chatml, the engine's default for a model that names neither.
        self.format = prompt_format(family) if family else (None if template else "chatml")
        self.bos = bos
        self.eos = eos
        self._env = _environment()
        builtin = TEMPLATES.get(self.format) if self.format else None
        source = template or builtin
        if source is None:
            raise ValueError(f"no chat template and no built-in one for the prompt format {family!r}")
        self._plain = self._env.from_string(source)
        self._plain_stops = self._stops(source, own=template is not None)
        self._tools: Any = None
        self._tools_stops: list[str] = []
        tools_source: str | None = None
        if template is not None and handles_tools(template):
            tools_source = template
        elif self.format in WITH_TOOLS and builtin is not None:
            tools_source = builtin
        if tools_source is not None:
            self._tools = self._plain if tools_source is source else self._env.from_string(tools_source)
            self._tools_stops = self._stops(tools_source, own=tools_source is template)
        self.tool_family = (
            family_for(family, template) if template and handles_tools(template) else family_for(self.format, None)
        )

    def _stops(self, source: str, *, own: bool) -> list[str]:
        family_stops = STOPS.get(self.format or "", ())
        if not own:
            return list(family_stops)
        # A model file's template: its EOS, and the format's end-of-turn strings that it actually prints.
        stops = [self.eos] if self.eos else []
        return stops + [s for s in family_stops if s in source and s not in stops]

    @property
    def supports_tools(self) -> bool:
        """Whether tools can be rendered for this model and its calls read back (lokal.toolcalls knows the
        format it writes them in)."""
        return self._tools is not None and self.tool_family is not None

    def render(self, messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> tuple[str, list[str]]:
        """Messages in OpenAI shape (role, content, tool_calls=[{id,type,function:{name,arguments}}],
        tool_call_id, name) -> (prompt text with the generation prompt, template stop strings). A template
        without tools support is replaced by the format's built-in one, so tools are never silently dropped;
        a format with no tool calling is an InvalidRequest."""
        msgs = template_messages(messages)
        wants_tools = bool(tools) or any(m.get("role") == "tool" or m.get("tool_calls") for m in msgs)
        if wants_tools and not self.supports_tools:
            raise InvalidRequest(
                "this model's chat template has no tool calling (prompt format "
                f"{self.format or 'from the model file'}); send the request without tools and tool messages",
                param="tools" if tools else "messages",
            )
        template, stops = (self._tools, self._tools_stops) if wants_tools else (self._plain, self._plain_stops)
        prompt = template.render(
            messages=msgs,
            tools=[dict(t) for t in tools] or None,
            add_generation_prompt=True,
            bos_token=self.bos,
            eos_token=self.eos,
        )
        return str(prompt), list(stops)
