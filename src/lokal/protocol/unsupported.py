"""OpenAI request fields lokal cannot honour yet: refused by name (HTTP 400), never answered as if absent.

A client that sends `audio` or `web_search_options` and gets plain text back cannot tell that it was ignored,
so these fields are declared on the request models and refused when they ask for something. The values
clients send by default (`modalities: ["text"]`, `best_of: 1`) ask for nothing and pass. Fields that cannot
change the answer (`user`, `metadata`, `store`, ...) are still ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Unsupported:
    neutral: tuple[Any, ...]  # values that ask for nothing
    why: str

    def allows(self, value: Any) -> bool:
        return any(_same(value, n) for n in self.neutral)


def _same(a: Any, b: Any) -> bool:
    # JSON false is not 0: `logprobs: 0` asks for log probabilities on /v1/completions.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


_LEGACY_FUNCTIONS = "functions and function_call are the deprecated form of tools; send tools and tool_choice"
_TEXT_ONLY = "lokal answers in text only; omit it"

SAMPLING: Mapping[str, Unsupported] = {}  # every sampling field OpenAI, vLLM and llama.cpp clients send is honoured

CHAT: Mapping[str, Unsupported] = {
    **SAMPLING,
    "functions": Unsupported((None, []), _LEGACY_FUNCTIONS),
    "function_call": Unsupported((None, "none", "auto"), _LEGACY_FUNCTIONS),
    "audio": Unsupported((None,), _TEXT_ONLY),
    "modalities": Unsupported((None, ["text"]), _TEXT_ONLY + ' or send ["text"]'),
    "web_search_options": Unsupported((None,), "web search is not supported; omit it"),
}

COMPLETIONS: Mapping[str, Unsupported] = {
    **SAMPLING,
    "suffix": Unsupported((None, ""), "suffix (fill-in-the-middle) is not supported yet; omit it"),
    "best_of": Unsupported((None, 1), "best_of above 1 is not supported; send n for several choices"),
}

MESSAGE: Mapping[str, Unsupported] = {
    "function_call": Unsupported((None,), _LEGACY_FUNCTIONS + " (tool_calls in assistant messages)"),
    "audio": Unsupported((None,), _TEXT_ONLY),
}

FIELDS = tuple(dict.fromkeys([*CHAT, *COMPLETIONS]))  # every name a request model may declare


def check(table: Mapping[str, Unsupported], field: str | None, value: Any) -> Any:
    rule = table.get(field or "")
    if rule is not None and not rule.allows(value):
        raise ValueError(rule.why)
    return value
