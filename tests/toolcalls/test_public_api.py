"""lokal.toolcalls exports exactly its documented API."""

from __future__ import annotations

import inspect

import lokal.toolcalls as toolcalls


def test_all_names_the_public_api() -> None:
    assert sorted(toolcalls.__all__) == sorted(
        ["FAMILIES", "ToolCallStream", "check_tools", "family_for", "json_schema_grammar", "new_call_id",
         "parse_tool_calls", "tool_constraint"]
    )  # fmt: skip
    for name in toolcalls.__all__:
        assert getattr(toolcalls, name) is not None


def test_signatures() -> None:
    assert list(inspect.signature(toolcalls.tool_constraint).parameters) == [
        "family",
        "tools",
        "tool_choice",
        "parallel",
    ]
    assert list(inspect.signature(toolcalls.parse_tool_calls).parameters) == ["family", "text", "tools", "parallel"]
    assert list(inspect.signature(toolcalls.ToolCallStream).parameters) == ["family", "tools", "parallel"]
    assert toolcalls.FAMILIES == ("hermes", "llama3", "mistral", "phi4", "harmony")
