"""The request side of tool calling and structured outputs: tools, tool_choice, the calls an assistant turn made,
and response_format. Checking the tools' schemas and turning schemas into grammars is lokal.toolcalls' work."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lokal.engines.base import ToolCall
from lokal.protocol.common import OpenAIModel

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function and schema names


class CalledFunction(OpenAIModel):
    name: str = Field(min_length=1)
    arguments: str  # JSON text

    @field_validator("arguments", mode="before")
    @classmethod
    def _json_text(cls, v: Any) -> Any:
        # OpenAI sends a string; some clients send the object itself. Either reaches the template as JSON text.
        return json.dumps(v) if isinstance(v, dict) else v


class AssistantToolCall(OpenAIModel):
    """A call an earlier assistant turn made, sent back with the conversation."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction

    def to_engine(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.function.name, arguments=self.function.arguments)


class FunctionName(OpenAIModel):
    name: str = Field(min_length=1)


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def choice_value(choice: ToolChoice | None) -> str | dict[str, Any]:
    """tool_choice as lokal.toolcalls takes it; no choice sent means "auto", as at OpenAI."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice.function.name}}


class JsonSchemaFormat(OpenAIModel):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("json_schema.name must be 1-64 letters, digits, '_' or '-'")
        return v


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object: {'name': ..., 'schema': {...}}")
        return self


__all__ = [
    "AssistantToolCall",
    "CalledFunction",
    "FunctionName",
    "JsonSchemaFormat",
    "NamedToolChoice",
    "ResponseFormat",
    "ToolChoice",
    "choice_value",
]
