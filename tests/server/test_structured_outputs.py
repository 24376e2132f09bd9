"""response_format json_schema through a real `lokal serve` with the official openai client: the tiny model's
noise comes out as JSON that validates against a strict schema (nested object, enum, array), whole and streamed;
a schema feature the grammar cannot express is a 400 that names it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai import OpenAI

from tests.support.server import LokalServer

USER = [{"role": "user", "content": "Describe a pet."}]
PET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"type": "string", "enum": ["cat", "dog", "fish"]},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}, "verified": {"type": "boolean"}},
            "required": ["name", "verified"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "age", "tags", "owner"],
    "additionalProperties": False,
}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "pet", "schema": PET, "strict": True}}


@pytest.fixture(scope="module")
def client(lokal_server: LokalServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, None), (1.0, 1), (1.0, 2)])
def test_json_schema_output_validates(client: OpenAI, temperature: float, seed: int | None) -> None:
    r = client.chat.completions.create(model="tiny", messages=USER, response_format=FORMAT, max_tokens=400,
                                       temperature=temperature, seed=seed)
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), PET)


def test_json_schema_output_streamed(client: OpenAI) -> None:
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="tiny", messages=USER, response_format=FORMAT, max_tokens=400,
                                                temperature=1.0, seed=7, stream=True)
        if c.choices
    )
    jsonschema.validate(json.loads(text), PET)


def test_the_sdk_parse_helper_reads_it(client: OpenAI) -> None:
    from pydantic import BaseModel, Field

    class Answer(BaseModel):
        verdict: bool
        score: int = Field(description="how sure")

    parsed = client.beta.chat.completions.parse(model="tiny", messages=USER, response_format=Answer,
                                                max_tokens=200, temperature=0)
    assert isinstance(parsed.choices[0].message.parsed, Answer)


@pytest.mark.parametrize(
    ("schema", "feature"),
    [({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
     ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}, "minimum"),
     ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties")],
)
def test_a_schema_feature_it_cannot_enforce_is_a_400_naming_it(
    client: OpenAI, schema: dict[str, Any], feature: str
) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=USER, response_format=fmt, max_tokens=4)
    body: Any = err.value.body
    assert body["param"] == "response_format" and feature in body["message"]
