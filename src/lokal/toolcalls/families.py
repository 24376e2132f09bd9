"""Which tool-call format a model writes, from its catalog template family or its Jinja template text.

The catalog names prompt formats (chatml, llama3, phi4, ...); a tool-call family is how a model of that format
writes a call. chatml models (Qwen2.5) write Hermes-style `<tool_call>` blocks. A GGUF's own template is the
better witness when it has one: the markers it prints for past calls are the ones the model was trained on.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

FAMILIES = ("hermes", "llama3", "mistral", "phi4", "harmony")  # tool-call formats lokal reads

# catalog chat_template family -> tool-call family; formats not here (phi3, gemma, deepseek-coder) have none
TEMPLATE_FAMILIES = {
    "chatml": "hermes",
    "hermes": "hermes",
    "qwen": "hermes",
    "qwen2": "hermes",
    "llama3": "llama3",
    "llama-3": "llama3",
    "mistral": "mistral",
    "phi4": "phi4",
    "phi-4": "phi4",
    "harmony": "harmony",
    "gpt-oss": "harmony",
}

# Markers in a Jinja template's text, most specific first: harmony templates also mention "<|end|>"-style
# tokens, Phi-4's <|tool_call|> must not be read as Hermes' <tool_call>.
SOURCE_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("harmony", ("<|channel|>", "<|call|>")),
    ("phi4", ("<|tool_call|>",)),
    ("phi4", ("<|tool|>",)),
    ("hermes", ("<tool_call>",)),
    ("mistral", ("[TOOL_CALLS]",)),
    ("llama3", ("<|python_tag|>",)),
    ("llama3", ("<|start_header_id|>", "tools")),
)


def new_call_id() -> str:
    """A fresh OpenAI-style call id: "call_" and 24 hex digits."""
    return "call_" + secrets.token_hex(12)


def normalise_family(chat_template: str | None) -> str | None:
    if chat_template is None:
        return None
    return TEMPLATE_FAMILIES.get(chat_template.strip().lower().replace("_", "-")) or TEMPLATE_FAMILIES.get(
        chat_template.strip().lower().replace("-", "").replace("_", "")
    )


def family_for(chat_template: str | None, template_source: str | None = None) -> str | None:
    """The tool-call format of a model: from the catalog's chat_template family name ("chatml" -> "hermes",
    "llama3", "mistral", "phi4", "harmony") and/or the Jinja template text (markers like "<tool_call>" win).
    None: the model has no known tool-call format (then tools are refused with a 400 by serving)."""
    if template_source:
        for family, markers in SOURCE_MARKERS:
            if all(m in template_source for m in markers):
                return family
    return normalise_family(chat_template)


def iter_functions(tools: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """The `function` objects of OpenAI tools (a bare function object is taken as it is)."""
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping):
            yield fn


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(fn["name"]) for fn in iter_functions(tools) if isinstance(fn.get("name"), str)]
