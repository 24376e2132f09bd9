"""Tool calls read out of model text, whole and streamed: split at every position, the deltas assemble into
exactly what parse_tool_calls reads from the whole answer, which is what each case expects."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from lokal.engines.base import ToolCallDelta
from lokal.toolcalls import ToolCallStream, parse_tool_calls
from tests.toolcalls.conftest import ADD, WEATHER

TOOLS = [WEATHER, ADD]
W = '{"city": "Paris"}'
R = '{"city": "Rome", "unit": "celsius"}'
A = '{"a": 1, "b": 22}'

# (family, model output, content, [(name, arguments)])
CASES: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("hermes", f'<tool_call>\n{{"name": "get_weather", "arguments": {W}}}\n</tool_call>', "", [("get_weather", W)]),
    (
        "hermes",
        f'Let me look.\n<tool_call>\n{{"name": "get_weather", "arguments": {W}}}\n</tool_call>\n'
        f'<tool_call>\n{{"name": "add", "arguments": {A}}}\n</tool_call>',
        "Let me look.",
        [("get_weather", W), ("add", A)],
    ),
    ("hermes", f'<tool_call>{{"arguments": {R}, "name": "get_weather"}}</tool_call>', "", [("get_weather", R)]),
    ("hermes", '<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1}"}\n</tool_call>', "", [("add", '{"a": 1}')]),
    ("hermes", '<tool_call>\n{"name": "add"}\n</tool_call>', "", [("add", "{}")]),
    ("hermes", 'A brace } and a quote " in {"json": 1}\n', 'A brace } and a quote " in {"json": 1}\n', []),
    ("hermes", "Use <tools> or <tool_call without closing", "Use <tools> or <tool_call without closing", []),
    ("hermes", "<tool_call>not json at all</tool_call>", "<tool_call>not json at all", []),
    ("hermes", "text then <tool_c", "text then <tool_c", []),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa', "", [("get_weather", '{"city": "Pa')]),
    ("hermes", '<tool_call>\n{"name": "get_wea', '<tool_call>\n{"name": "get_wea', []),
    ("hermes", f'<tool_call>\n{{"name": "get_weather", "arguments": {W}}}', "", [("get_weather", W)]),
    ("hermes", 'He said "<tool_call>" is a tag.', 'He said "<tool_call>" is a tag.', []),
    ("llama3", f'{{"name": "get_weather", "parameters": {W}}}', "", [("get_weather", W)]),
    ("llama3", f'  {{"type": "function", "name": "add", "parameters": {A}}}', "", [("add", A)]),
    (
        "llama3",
        f'<|python_tag|>{{"name": "get_weather", "parameters": {W}}}; {{"name": "add", "parameters": {A}}}',
        "",
        [("get_weather", W), ("add", A)],
    ),
    ("llama3", f'Sure: {{"name": "add", "parameters": {A}}}', "Sure:", [("add", A)]),
    ("llama3", '{"name": "Ada", "born": 1815}', '{"name": "Ada", "born": 1815}', []),
    ("llama3", 'function f() { return {"a": 1}; }', 'function f() { return {"a": 1}; }', []),
    (
        "mistral",
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {W}, "id": "a1b2c3d4e"}}]',
        "",
        [("get_weather", W)],
    ),
    (
        "mistral",
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {W}}}, {{"name": "add", "arguments": {A}}}]',
        "",
        [("get_weather", W), ("add", A)],
    ),
    (
        "mistral",
        f"[TOOL_CALLS]get_weather[ARGS]{W}[TOOL_CALLS]add[ARGS]{A}",
        "",
        [("get_weather", W), ("add", A)],
    ),
    ("mistral", f"[TOOL_CALLS]add[CALL_ID]x1y2z3w4v[ARGS]{A}", "", [("add", A)]),
    ("mistral", "Arrays look like [TOOL] or [1, 2]", "Arrays look like [TOOL] or [1, 2]", []),
    ("mistral", "[TOOL_CALLS][]", "[TOOL_CALLS][]", []),
    ("phi4", f'<|tool_call|>[{{"name": "get_weather", "arguments": {W}}}]<|/tool_call|>', "", [("get_weather", W)]),
    ("phi4", f'<|tool_call|>{{"name": "add", "arguments": {A}}}<|/tool_call|>', "", [("add", A)]),
    (
        "phi4",
        f'I will call both. functools[{{"name": "get_weather", "arguments": {W}}}, '
        f'{{"name": "add", "arguments": {A}}}]',
        "I will call both.",
        [("get_weather", W), ("add", A)],
    ),
    ("phi4", "from functools import partial", "from functools import partial", []),
    ("phi4", "<|tool|> is not <|tool_call", "<|tool|> is not <|tool_call", []),
    (
        "harmony",
        "<|channel|>analysis<|message|>The user wants weather.<|end|><|start|>assistant<|channel|>commentary "
        f"to=functions.get_weather <|constrain|>json<|message|>{W}",
        "",
        [("get_weather", W)],
    ),
    (
        "harmony",
        f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{W}<|call|>",
        "",
        [("get_weather", W)],
    ),
    ("harmony", f" to=functions.add<|channel|>commentary json<|message|>{A}", "", [("add", A)]),
    (
        "harmony",
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.",
        "It is sunny.",
        [],
    ),
    ("harmony", "A plain answer with <|no markup|>", "A plain answer with <|no markup|>", []),
    ("harmony", "<|channel|>analysis<|message|>cut short", "", []),
    (
        "harmony",
        "<|channel|>commentary<|message|>Checking two things.<|end|><|start|>assistant<|channel|>commentary "
        f"to=functions.add <|constrain|>json<|message|>{A}",
        "Checking two things.",
        [("add", A)],
    ),
]


def assemble(items: list[str | ToolCallDelta]) -> tuple[str, list[tuple[str, str]]]:
    """Content and calls as an OpenAI client puts them together from stream deltas."""
    content = ""
    calls: dict[int, list[str]] = {}
    for item in items:
        if isinstance(item, str):
            content += item
            continue
        if item.id is not None:
            assert item.index not in calls, "id and name are sent once per index"
            assert re.fullmatch(r"call_[0-9a-f]{24}", item.id)
            assert item.name
            calls[item.index] = [item.name, ""]
        calls[item.index][1] += item.arguments
    assert sorted(calls) == list(range(len(calls))), "indexes count up from 0"
    return content, [(name, args) for name, args in (calls[i] for i in sorted(calls))]


def streamed(family: str, pieces: list[str], *, parallel: bool = True) -> tuple[str, list[tuple[str, str]]]:
    stream = ToolCallStream(family, TOOLS, parallel=parallel)
    items: list[str | ToolCallDelta] = []
    for piece in pieces:
        items += stream.feed(piece)
    items += stream.close()
    got = assemble(items)
    assert [(c.name, c.arguments) for c in stream.calls] == got[1], "calls == assembled deltas"
    return got


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_whole_answer(family: str, text: str, content: str, calls: list[tuple[str, str]]) -> None:
    got_content, got_calls = parse_tool_calls(family, text, TOOLS)
    assert got_content == content
    assert [(c.name, c.arguments) for c in got_calls] == calls
    assert len({c.id for c in got_calls}) == len(got_calls)


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_split_at_every_position(family: str, text: str, content: str, calls: list[tuple[str, str]]) -> None:
    for cut in range(len(text) + 1):
        assert streamed(family, [text[:cut], text[cut:]]) == (content, calls), f"split at {cut}: {text[:cut]!r}"
    assert streamed(family, list(text)) == (content, calls), "one character at a time"


def test_arguments_stream_before_the_call_ends() -> None:
    stream = ToolCallStream("hermes", TOOLS)
    first = stream.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": ')
    assert len(first) == 1 and isinstance(first[0], ToolCallDelta)
    assert (first[0].name, first[0].arguments) == ("get_weather", '{"city": ')
    assert stream.calls == []  # not complete yet
    more = stream.feed('"Par')
    assert more == [ToolCallDelta(index=0, arguments='"Par')]
    stream.feed('is"}}\n</tool_call>')
    assert [(c.name, c.arguments) for c in stream.calls] == [("get_weather", W)]


def test_possible_marker_is_held_then_released() -> None:
    stream = ToolCallStream("hermes", TOOLS)
    assert stream.feed("Hello <tool") == ["Hello"]
    assert stream.feed("box> here") == [" <toolbox> here"]


def test_parallel_off_keeps_the_first_call() -> None:
    text = f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {W}}}, {{"name": "add", "arguments": {A}}}]'
    assert streamed("mistral", [text], parallel=False) == ("", [("get_weather", W)])
    _, calls = parse_tool_calls("mistral", text, TOOLS, parallel=False)
    assert [c.name for c in calls] == ["get_weather"]


def test_arguments_are_json_when_complete() -> None:
    for family, text, _, calls in CASES:
        for _, args in calls:
            if not args.endswith("Pa"):
                assert isinstance(json.loads(args), dict), (family, text)


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown tool-call family"):
        ToolCallStream("chatml", TOOLS)


def test_no_feed_after_close() -> None:
    stream = ToolCallStream("hermes", TOOLS)
    stream.close()
    assert stream.close() == []
    with pytest.raises(RuntimeError):
        stream.feed("x")


def test_tools_as_plain_function_objects() -> None:
    bare: list[dict[str, Any]] = [WEATHER["function"]]
    _, calls = parse_tool_calls("llama3", f'{{"name": "get_weather", "parameters": {W}}}', bare)
    assert [c.name for c in calls] == ["get_weather"]
