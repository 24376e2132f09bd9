"""Prompt sets: a built-in deterministic set and loaders for user files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Prompt:
    id: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int | None = None  # overrides the run's max_tokens for this prompt
    tags: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        return "\n".join(m.get("content", "") for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": list(self.messages),
            "max_tokens": self.max_tokens,
            "tags": list(self.tags),
        }


def _user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


_PASSAGE = (
    "The Rhine rises in the Swiss Alps and flows about 1,230 kilometres through Switzerland, Liechtenstein, "
    "Austria, Germany, France and the Netherlands before reaching the North Sea. For centuries it has been "
    "one of Europe's busiest waterways, carrying coal, grain and containers between the industrial Ruhr and "
    "the port of Rotterdam. Low water in dry summers now forces barges to sail half empty, which raises "
    "freight costs and has pushed shippers to invest in shallower hulls and better water-level forecasts."
)

# Fixed text and order: the same run on two days sends byte-identical requests, so numbers compare.
BUILTIN: tuple[Prompt, ...] = (
    Prompt("qa-capital", _user("What is the capital of Australia? Answer in one sentence."), tags=("qa", "short")),
    Prompt(
        "explain-tcp",
        _user("Explain the difference between TCP and UDP to a new developer in three short paragraphs."),
        tags=("explain",),
    ),
    Prompt("summarize-rhine", _user(f"Summarize in two sentences:\n\n{_PASSAGE}"), tags=("summarize",)),
    Prompt(
        "code-fizzbuzz",
        _user("Write a Python function fizzbuzz(n) that returns a list of strings. Include a docstring."),
        tags=("code",),
    ),
    Prompt(
        "list-ideas",
        (
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "List five ways to reduce the energy use of a small office."},
        ),
        tags=("list",),
    ),
    Prompt(
        "reason-trains",
        _user(
            "A train leaves at 09:10 and travels 180 km at 120 km/h. A second train leaves the same station "
            "at 09:30 at 150 km/h on the same route. Which arrives first, and by how many minutes? "
            "Show your steps."
        ),
        tags=("reasoning",),
    ),
    Prompt(
        "translate-de",
        _user("Translate to German: 'The meeting has been moved to Thursday afternoon because of the holiday.'"),
        tags=("translate", "short"),
    ),
    Prompt(
        "extract-json",
        _user(
            "Extract the rivers, countries and ports from this text as JSON with keys rivers, countries, "
            f"ports:\n\n{_PASSAGE}"
        ),
        tags=("extract",),
    ),
)


def _from_obj(obj: Any, index: int) -> Prompt:
    if isinstance(obj, str):
        return Prompt(id=f"p{index}", messages=_user(obj))
    if not isinstance(obj, dict):
        raise ValueError(f"prompt #{index}: expected a string or an object, got {type(obj).__name__}")
    if "messages" in obj:
        messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in obj["messages"])
    elif "prompt" in obj:
        messages = _user(str(obj["prompt"]))
    else:
        raise ValueError(f"prompt #{index}: needs 'prompt' or 'messages'")
    max_tokens = obj.get("max_tokens")
    return Prompt(
        id=str(obj.get("id", f"p{index}")),
        messages=messages,
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        tags=tuple(str(t) for t in obj.get("tags", ())),
    )


def load_prompts(source: str | Path | None) -> list[Prompt]:
    """`None` or "builtin" gives the built-in set; otherwise a JSON/YAML file holding a list of strings or
    objects `{id?, prompt | messages, max_tokens?, tags?}` (or `{"prompts": [...]}`)."""
    if source is None or str(source) == "builtin":
        return list(BUILTIN)
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of prompts")
    prompts = [_from_obj(obj, i) for i, obj in enumerate(data)]
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: prompt ids must be unique")
    return prompts
