"""response_format json_schema: refused features are named, and what is accepted constrains the tiny model
to output that validates against the schema."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from lokal.errors import InvalidRequest
from lokal.toolcalls import json_schema_grammar
from tests.toolcalls.conftest import generate, grammar_compiles

SUPPORTED: dict[str, dict[str, Any]] = {
    "nested object": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "additionalProperties": False,
            },
            "ok": {"type": "boolean"},
        },
        "required": ["person", "ok"],
        "additionalProperties": False,
    },
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", 3, None]}}, "required": ["color"]},
    "array with minItems": {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}},
        "required": ["xs"],
    },
    "required and optional": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "note": {"type": "string", "maxLength": 6},
            "flag": {"type": ["boolean", "null"]},
        },
        "required": ["id"],
        "additionalProperties": False,
    },
    "refs and anyOf": {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "type": "object",
        "properties": {"at": {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}]}},
        "required": ["at"],
    },
    "pattern and format": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}, "day": {"format": "date"}},
        "required": ["code", "day"],
    },
    "allOf": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"const": "yes"}}, "required": ["b"]},
        ]
    },
}


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_supported_schemas_constrain_output(tiny_llm: Any, name: str) -> None:
    schema = SUPPORTED[name]
    grammar = json_schema_grammar(schema)
    assert grammar_compiles(tiny_llm, grammar)
    for seed in range(2):
        text, finish = generate(tiny_llm, grammar, seed=seed, max_tokens=300)
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "integer", "minimum": 0}, "'minimum' at /"),
        ({"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}}, "'multipleOf' at /properties/a"),
        ({"not": {"type": "string"}}, "'not' at /"),
        ({"if": {"type": "string"}, "then": {"maxLength": 2}, "else": {"type": "null"}}, "'if' at /; 'then' at /"),
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "'patternProperties' at /"),
        ({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}, "'dependentSchemas' at /"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems' at /"),
        ({"type": "array", "contains": {"const": 1}}, "'contains' at /"),
        ({"$ref": "https://example.com/schema.json"}, "only references inside the schema"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'required' names 'b'"),
        ({"type": "string", "pattern": "^\\d{3}$"}, "pattern '^\\\\d{3}$'"),
        ({"type": "string", "pattern": "^(?=a).*$"}, "lookarounds"),
        ({"type": "string", "format": "email"}, "format 'email'"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "points at nothing"),
        ({"type": "float"}, "unknown type 'float'"),
        ({"enum": []}, "'enum' must be a non-empty array"),
        ({"type": "array", "items": False}, "'items': false"),
        ({"maxLength": 3}, 'without "type": "string"'),
    ],
)
def test_unsupported_features_are_named(schema: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        json_schema_grammar(schema)
    assert err.value.param == "response_format"
    assert named in err.value.message, err.value.message
    assert err.value.message.startswith("response_format's json_schema uses features lokal cannot enforce")


def test_all_problems_are_listed_at_once() -> None:
    schema = {"type": "object", "properties": {"a": {"not": {}}, "b": {"type": "integer", "maximum": 3}}}
    with pytest.raises(InvalidRequest) as err:
        json_schema_grammar(schema)
    assert "'not' at /properties/a" in err.value.message and "'maximum' at /properties/b" in err.value.message


def test_recursive_schema(tiny_llm: Any) -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["v", "next"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/Node",
    }
    grammar = json_schema_grammar(schema)
    text, finish = generate(tiny_llm, grammar, seed=1, max_tokens=300)
    if finish == "stop":
        jsonschema.validate(json.loads(text), schema)
    assert re.match(r'\{ ?"v"', text)


def test_unanchored_pattern_is_anchored_and_still_valid(tiny_llm: Any) -> None:
    schema = {"type": "string", "pattern": "ab[0-9]"}
    text, _ = generate(tiny_llm, json_schema_grammar(schema), seed=0)
    jsonschema.validate(json.loads(text), schema)
