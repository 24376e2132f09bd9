"""Checking the OpenAI `tools` a request sends, with messages that say which tool and what is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lokal.errors import InvalidRequest

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="tools")


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """Validate OpenAI `tools` (type function, name pattern ^[a-zA-Z0-9_-]{1,64}$, parameters a JSON schema
    object); InvalidRequest(param="tools") naming what is wrong. Returns normalised tool dicts:
    {"type": "function", "function": {"name", "description"?, "parameters", "strict"?}} (None: [])."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad(f"'tools' must be an array of tools, not {type(tools).__name__}")
    if not tools:
        raise _bad("'tools' is an empty array; send at least one tool or leave 'tools' out")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise _bad(f'{where} must be an object like {{"type": "function", "function": {{...}}}}')
        kind = tool.get("type")
        if kind != "function":
            raise _bad(f"{where}.type is {kind!r}; lokal supports only tools of type 'function'")
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            raise _bad(f"{where}.function is missing or not an object")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise _bad(f"{where}.function.name {name!r} is invalid: use 1 to 64 letters, digits, underscores or dashes")
        if name in seen:
            raise _bad(f"{where}.function.name {name!r} is used by an earlier tool; tool names must be unique")
        seen.add(name)
        function: dict[str, Any] = {"name": name}
        description = fn.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise _bad(f"{where}.function.description must be a string")
            function["description"] = description
        function["parameters"] = _parameters(fn.get("parameters"), f"{where}.function.parameters")
        strict = fn.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise _bad(f"{where}.function.strict must be true or false")
            function["strict"] = strict
        out.append({"type": "function", "function": function})
    return out


def _parameters(schema: Any, where: str) -> dict[str, Any]:
    if schema is None:
        return dict(EMPTY_PARAMETERS)  # a function without parameters takes an empty object
    if not isinstance(schema, Mapping):
        raise _bad(f"{where} must be a JSON Schema object, not {type(schema).__name__}")
    kind = schema.get("type", "object")
    if kind != "object":
        raise _bad(f"{where}.type is {kind!r}; function parameters must be a JSON Schema of type 'object'")
    props = schema.get("properties", {})
    if not isinstance(props, Mapping) or not all(isinstance(v, Mapping | bool) for v in props.values()):
        raise _bad(f"{where}.properties must map each parameter name to a JSON Schema")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _bad(f"{where}.required must be an array of parameter names")
    return dict(schema)
