"""The OpenAI Responses API (/v1/responses): the request, and the chat completion that answers it.

lokal serves it as an adapter over chat completions, as vLLM and llama-server do: a request becomes a
ChatCompletionRequest (`ResponsesRequest.to_chat`), so the model's own chat template, tool-call parsing and
grammars are the ones /v1/chat/completions uses. Input items of every kind lokal can read (messages, function
calls, function call outputs) become chat messages; what local models cannot take (images, files, built-in
tools such as web_search, reasoning, background runs, server-side conversations) is a 400 naming it.

What lokal sends back (the response object, stored items, stream events) is in protocol/responses_output.py.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lokal.errors import InvalidRequest
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.common import MAX_TOKENS_CAP, OpenAIModel
from lokal.protocol.tools import NAME_RE

MAX_TOP_LOGPROBS = 20
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# Values of `include` that ask for parts of items lokal never produces (search results, images, encrypted
# reasoning): there is nothing to add, so they ask for nothing. Anything else is refused.
_INCLUDE_NOTHING = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
    }
)
_PART_REFUSALS = {
    "input_image": "images are not supported (lokal's models read text only)",
    "input_file": "files are not supported (send the text as input_text)",
    "input_audio": "audio is not supported (lokal's models read text only)",
}
_ITEM_REFUSALS = {
    "item_reference": "item_reference items are not supported: send the item itself, or continue the stored "
    "conversation with previous_response_id",
    "reasoning": "reasoning items are not supported (lokal's models return no reasoning items)",
}


def new_id(prefix: str) -> str:
    """Responses ids: `resp_`, `msg_`, `fc_`, ... and 48 random hex digits (a stored response is read by id)."""
    return f"{prefix}_{secrets.token_hex(24)}"


# -- request: input items --------------------------------------------------------------------------------------
class TextPart(OpenAIModel):
    type: Literal["input_text", "output_text"]
    text: str


class RefusalPart(OpenAIModel):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
Status = Literal["in_progress", "completed", "incomplete"]


Role = Literal["user", "assistant", "system", "developer"]


class MessageItem(OpenAIModel):
    type: Literal["message"] = "message"
    role: Role
    content: str | list[Part]
    id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text if isinstance(p, TextPart) else p.refusal for p in self.content)


class FunctionCallItem(OpenAIModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: Status | None = None


class FunctionCallOutputItem(OpenAIModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[TextPart]
    id: str | None = None

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


InputItem = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]


# -- request: tools and formats --------------------------------------------------------------------------------
class FunctionTool(OpenAIModel):
    """Responses function tools are flat: name, description and parameters beside the type."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"function name {v!r} is invalid: use 1 to 64 letters, digits, underscores or dashes")
        return v

    def to_chat(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description is not None:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


class FunctionChoice(OpenAIModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedTool(OpenAIModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedTools(OpenAIModel):
    """A subset of the tools the model may call this turn (the full list stays the same for prompt caching)."""

    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[AllowedTool] = Field(min_length=1)


ToolChoice = Literal["none", "auto", "required"] | FunctionChoice | AllowedTools


class TextFormat(BaseModel):
    """text.format: plain text, any JSON object, or JSON that matches a schema (Structured Outputs)."""

    model_config = ConfigDict(extra="ignore", serialize_by_alias=True, validate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a json_schema format needs a name and a schema: {type, name, schema, strict}")
        return self

    def response_format(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        spec = {"name": self.name, "schema": self.schema_, "description": self.description, "strict": self.strict}
        return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}


class TextConfig(OpenAIModel):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: Literal["low", "medium", "high"] | None = None

    @field_validator("verbosity")
    @classmethod
    def _no_verbosity(cls, v: str | None) -> str | None:
        if v not in (None, "medium"):
            raise ValueError("verbosity is not supported (lokal's models have no verbosity setting); omit it")
        return v


# -- request ---------------------------------------------------------------------------------------------------
class ResponsesRequest(OpenAIModel):
    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = None
    stream: bool = False
    store: bool | None = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        """Refusals that name what lokal cannot do, raised as InvalidRequest so the message is exactly this."""
        if not isinstance(data, dict):
            return data
        tools = data.get("tools")
        for i, tool in enumerate(tools if isinstance(tools, list) else ()):  # other shapes: pydantic's 400
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise InvalidRequest(
                    f"tools.{i}: the tool type {kind!r} is not supported; lokal has no built-in tools and calls "
                    "your own function tools ({'type': 'function', 'name', 'parameters'})",
                    param=f"tools.{i}.type",
                )
        choice = data.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
            raise InvalidRequest(
                f"tool_choice type {choice.get('type')!r} is not supported: lokal has no built-in tools; send "
                "'none', 'auto', 'required', {'type': 'function', 'name': ...} or {'type': 'allowed_tools', ...}",
                param="tool_choice",
            )
        items = data.get("input")
        if isinstance(items, list):
            for i, item in enumerate(items):
                _check_item(i, item)
        _check_options(data)
        return data

    @field_validator("store", mode="before")
    @classmethod
    def _store_default(cls, v: Any) -> Any:
        return True if v is None else v  # OpenAI's schema makes it nullable; null is the default, true

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str] | None) -> list[str] | None:
        for value in v or ():
            if value != LOGPROBS_INCLUDE and value not in _INCLUDE_NOTHING:
                raise ValueError(f"{value!r} is not a value lokal knows for include")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        names = [t.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise InvalidRequest("tool names must be unique", param="tools")
        choice = self.tool_choice
        wanted = [choice.name] if isinstance(choice, FunctionChoice) else []
        if isinstance(choice, AllowedTools):
            wanted = [t.name for t in choice.tools]
        for name in wanted:
            if name not in names:
                raise InvalidRequest(
                    f"tool_choice names the function {name!r}, which is not among the tools ({', '.join(names)})",
                    param="tool_choice",
                )
        if names and choice != "none" and self.format.type == "json_schema":
            raise InvalidRequest(
                "text.format json_schema together with tools is not supported: both constrain the output; send "
                "one of them (or tool_choice: 'none')",
                param="text.format",
            )
        return self

    @property
    def wants_logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or ()) or bool(self.top_logprobs)

    @property
    def format(self) -> TextFormat:
        return self.text.format if self.text is not None else TextFormat()

    def to_chat(self, items: list[InputItem], *, stream: bool) -> ChatCompletionRequest:
        """The chat completion that answers this request, over the whole conversation `items`."""
        messages = ([{"role": "system", "content": self.instructions}] if self.instructions else []) + chat_messages(
            items
        )
        if not messages:
            raise InvalidRequest("input is empty: send input (text or items) or a previous_response_id", param="input")
        fields: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        if stream:
            fields["stream_options"] = {"include_usage": True}
        optional = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        fields.update({k: v for k, v in optional.items() if v is not None})
        tools, choice = self.tools or [], self.tool_choice
        if isinstance(choice, AllowedTools):
            allowed = {t.name for t in choice.tools}
            tools, choice = [t for t in tools if t.name in allowed], choice.mode
        if tools:
            fields["tools"] = [t.to_chat() for t in tools]
        if isinstance(choice, FunctionChoice):
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice is not None:
            fields["tool_choice"] = choice
        if self.parallel_tool_calls is not None:
            fields["parallel_tool_calls"] = self.parallel_tool_calls
        response_format = self.format.response_format()
        if response_format is not None:
            fields["response_format"] = response_format
        if self.wants_logprobs:
            fields.update(logprobs=True, top_logprobs=self.top_logprobs or 0)
        try:
            return ChatCompletionRequest.model_validate(fields)
        except ValidationError as exc:  # our own checks ran first; what is left is worded for chat completions
            err = exc.errors()[0]
            raise InvalidRequest(str(err.get("msg", "invalid value")).removeprefix("Value error, ")) from None


def _check_item(i: int, item: Any) -> None:
    if not isinstance(item, dict):
        return
    kind = item.setdefault("type", "message")  # an "easy" message item ({role, content}) has no type
    if not isinstance(kind, str):
        return  # pydantic's 400 names it
    where = f"input.{i}"
    if kind in _ITEM_REFUSALS:
        raise InvalidRequest(f"{where}: {_ITEM_REFUSALS[kind]}", param=f"{where}.type")
    if kind not in ("message", "function_call", "function_call_output"):
        raise InvalidRequest(
            f"{where}: {kind!r} items are not supported (lokal has no built-in tools); send message, "
            "function_call and function_call_output items",
            param=f"{where}.type",
        )
    parts = item.get("content") if kind == "message" else item.get("output")
    for j, part in enumerate(parts if isinstance(parts, list) else ()):
        inner = part.get("type") if isinstance(part, dict) else None
        if isinstance(inner, str) and inner in _PART_REFUSALS:
            field = "content" if kind == "message" else "output"
            raise InvalidRequest(f"{where}.{field}.{j}: {_PART_REFUSALS[inner]}", param=f"{where}.{field}.{j}.type")


def _check_options(data: dict[str, Any]) -> None:
    reasoning = data.get("reasoning")
    if (
        isinstance(reasoning, dict)
        and reasoning.get("effort") in (None, "none")
        and not any(v is not None for k, v in reasoning.items() if k != "effort")
    ):
        reasoning = None  # {"effort": "none"} or all nulls: no reasoning asked for
    refusals = {
        "reasoning": (reasoning, "reasoning is not supported: lokal's models have no reasoning-effort setting"),
        "background": (
            data.get("background") or None,
            "background responses are not supported (lokal answers while the request waits)",
        ),
        "conversation": (
            data.get("conversation"),
            "conversations are not supported (continue one with previous_response_id)",
        ),
        "prompt": (data.get("prompt"), "stored prompts are not supported (send instructions and input)"),
        "context_management": (data.get("context_management"), "context_management is not supported"),
    }
    for name, (value, why) in refusals.items():
        if value not in (None, [], {}):
            raise InvalidRequest(f"{why}; omit {name}", param=name)
    if data.get("truncation") == "auto":
        raise InvalidRequest(
            "truncation 'auto' is not supported: lokal does not drop earlier turns; a conversation longer than "
            "the model's context is a 400 (omit truncation or send 'disabled')",
            param="truncation",
        )


# -- input items as a chat conversation ----------------------------------------------------------------------
def chat_messages(items: list[InputItem]) -> list[dict[str, Any]]:
    """Input items as chat messages: function calls join the assistant turn before them (or start one), each
    function call output is the tool message that answers its call."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            out.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
    return out


class _Items(BaseModel):
    items: list[InputItem]


def read_items(items: list[dict[str, Any]]) -> list[InputItem]:
    """Stored item dicts (a stored conversation) read back as input items."""
    return _Items.model_validate({"items": items}).items


__all__ = [
    "LOGPROBS_INCLUDE",
    "AllowedTools",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionChoice",
    "FunctionTool",
    "InputItem",
    "MessageItem",
    "ResponsesRequest",
    "Role",
    "TextConfig",
    "TextFormat",
    "chat_messages",
    "new_id",
    "read_items",
]
