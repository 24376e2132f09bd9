"""check_tools: OpenAI `tools` normalised, or a 400 that says which tool and what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from lokal.errors import InvalidRequest
from lokal.toolcalls import check_tools


def fn(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": function}


def test_normalised() -> None:
    tools = check_tools([fn(name="get_weather", description="d", strict=True), fn(name="now")])
    assert tools == [
        {"type": "function", "function": {"name": "get_weather", "description": "d",
                                          "parameters": {"type": "object", "properties": {}}, "strict": True}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]  # fmt: skip
    assert check_tools(None) == []


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"type": "function"}, "'tools' must be an array"),
        ([], "empty array"),
        (["x"], "tools[0] must be an object"),
        ([{"type": "web_search"}], "tools[0].type is 'web_search'; lokal supports only tools of type 'function'"),
        ([{"type": "function"}], "tools[0].function is missing"),
        ([fn(name="has space")], "tools[0].function.name 'has space' is invalid"),
        ([fn(name="x" * 65)], "is invalid: use 1 to 64"),
        ([fn(name="a"), fn(name="a")], "tools[1].function.name 'a' is used by an earlier tool"),
        ([fn(name="a", description=3)], "tools[0].function.description must be a string"),
        ([fn(name="a", parameters="{}")], "tools[0].function.parameters must be a JSON Schema object"),
        ([fn(name="a", parameters={"type": "string"})], "must be a JSON Schema of type 'object'"),
        ([fn(name="a", parameters={"type": "object", "properties": []})], "properties must map"),
        ([fn(name="a", parameters={"type": "object", "required": "x"})], "required must be an array"),
        ([fn(name="a", strict="yes")], "strict must be true or false"),
    ],
)
def test_refused(tools: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_tools(tools)
    assert err.value.param == "tools"
    assert message in err.value.message, err.value.message
