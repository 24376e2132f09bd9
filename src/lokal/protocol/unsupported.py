"""OpenAI request fields lokal cannot honour yet: refused by name (HTTP 400), never answered as if absent.

A client that sends `tools` or `logprobs` and gets plain text back cannot tell that it was ignored, so these
fields are declared on the request models and refused when they ask for something. The values clients send
by default (a penalty of 0, `logprobs: false`, `tool_choice: "none"`) ask for nothing and pass. Fields that
cannot change the answer (`user`, `metadata`, `store`, ...) are still ignored.
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


_PENALTY = "repetition penalties are not supported yet; omit it"
_LOGPROBS = "log probabilities are not supported yet; omit it"
_TOOLS = "tool calling is not supported yet; omit it"
_TEXT_ONLY = "lokal answers in text only; omit it"

SAMPLING: Mapping[str, Unsupported] = {
    "presence_penalty": Unsupported((None, 0), _PENALTY + " or send 0"),
    "frequency_penalty": Unsupported((None, 0), _PENALTY + " or send 0"),
    "repeat_penalty": Unsupported((None, 1), _PENALTY + " or send 1"),  # llama.cpp's name
    "repetition_penalty": Unsupported((None, 1), _PENALTY + " or send 1"),  # vLLM's name
    "logit_bias": Unsupported((None, {}), "logit_bias is not supported yet; omit it"),
    # The llama.cpp engines sample with these fixed values (engines/llamacpp.py): asking for them is fine.
    "top_k": Unsupported((None, 40), "top_k is fixed at 40 for now; omit it"),
    "min_p": Unsupported((None, 0.05), "min_p is fixed at 0.05 for now; omit it"),
}

CHAT: Mapping[str, Unsupported] = {
    **SAMPLING,
    "logprobs": Unsupported((None, False), _LOGPROBS),
    "top_logprobs": Unsupported((None, 0), _LOGPROBS),
    "tools": Unsupported((None, []), _TOOLS),
    "tool_choice": Unsupported((None, "none", "auto"), _TOOLS),
    "functions": Unsupported((None, []), _TOOLS),
    "function_call": Unsupported((None, "none", "auto"), _TOOLS),
    "audio": Unsupported((None,), _TEXT_ONLY),
    "modalities": Unsupported((None, ["text"]), _TEXT_ONLY + ' or send ["text"]'),
    "web_search_options": Unsupported((None,), "web search is not supported; omit it"),
}

COMPLETIONS: Mapping[str, Unsupported] = {
    **SAMPLING,
    "logprobs": Unsupported((None,), _LOGPROBS),
    "suffix": Unsupported((None, ""), "suffix (fill-in-the-middle) is not supported yet; omit it"),
    "best_of": Unsupported((None, 1), "best_of above 1 is not supported; send several requests instead"),
}

MESSAGE: Mapping[str, Unsupported] = {
    "tool_calls": Unsupported((None, []), _TOOLS),
    "function_call": Unsupported((None,), _TOOLS),
    "audio": Unsupported((None,), _TEXT_ONLY),
}

FIELDS = tuple(dict.fromkeys([*CHAT, *COMPLETIONS]))  # every name a request model may declare


def check(table: Mapping[str, Unsupported], field: str | None, value: Any) -> Any:
    rule = table.get(field or "")
    if rule is not None and not rule.allows(value):
        raise ValueError(rule.why)
    return value
