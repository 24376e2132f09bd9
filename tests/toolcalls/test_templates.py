"""Each family's own template writes past calls the way its parser reads them back: the assistant turn a
template renders for a conversation's calls, cut where the model's turn would end, parses to those calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lokal.engines.chat_render import ChatRenderer
from lokal.toolcalls import family_for, parse_tool_calls
from lokal.toolcalls.templates import STOPS, TEMPLATES, WITH_TOOLS
from tests.toolcalls.conftest import ADD, WEATHER

TOOLS = [WEATHER, ADD]
CALLS: list[dict[str, Any]] = [
    {"id": "call_" + "a" * 24, "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}},
    {"id": "call_" + "b" * 24, "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
]  # fmt: skip


def model_turn(fmt: str, calls: list[dict[str, Any]]) -> str:
    """What the template says the model wrote for `calls`: the new text after the generation prompt, up to
    the first stop string (as the engine trims it)."""
    renderer = ChatRenderer(None, fmt, bos="<s>", eos="</s>")
    before = [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "Paris weather, and 2+3?"}]
    prefix, stops = renderer.render(before, TOOLS)
    full, _ = renderer.render([*before, {"role": "assistant", "content": "", "tool_calls": calls}], TOOLS)
    assert full.startswith(prefix), "the generation prompt is where the assistant turn starts"
    turn = full[len(prefix) :]
    cut = min((turn.find(s) for s in stops if s in turn), default=len(turn))
    return turn[:cut]


@pytest.mark.parametrize("fmt", sorted(WITH_TOOLS))
def test_rendered_calls_parse_back(fmt: str) -> None:
    family = family_for(fmt, TEMPLATES[fmt])
    assert family is not None
    calls = CALLS[:1] if fmt == "harmony" else CALLS  # harmony: one call per generation (<|call|> ends it)
    text = model_turn(fmt, calls)
    content, parsed = parse_tool_calls(family, text, TOOLS)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in parsed] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ]


@pytest.mark.parametrize("fmt", sorted(WITH_TOOLS))
def test_stops_do_not_cut_call_markup_the_parser_needs(fmt: str) -> None:
    text = model_turn(fmt, CALLS[:1])
    assert not any(s in text for s in STOPS[fmt])
    _, parsed = parse_tool_calls(family_for(fmt) or "", text, TOOLS)
    assert len(parsed) == 1


@pytest.mark.parametrize(
    ("like", "fmt"), [("tiny", "chatml"), ("qwen2.5-0.5b", "chatml"), ("phi-4-mini", "phi4"), ("mistral-7b", "mistral")]
)
def test_synthetic_models_carry_their_formats_template(tmp_path: Any, like: str, fmt: str) -> None:
    import gguf

    from lokal.gguf.synthetic import SHAPES, write_gguf

    path = write_gguf(tmp_path / "m.gguf", SHAPES["tiny"], "f32", like=like)
    field = gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == TEMPLATES[fmt]
