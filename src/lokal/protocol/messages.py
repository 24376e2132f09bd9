"""The Anthropic Messages API (/v1/messages, /v1/messages/count_tokens): request, response, stream events, errors.

lokal serves it as an adapter over chat completions, as llama-server, Ollama, LM Studio and vLLM do: a request
becomes a ChatCompletionRequest (`to_chat`), so the model's own chat template, tool-call parsing and grammars
are the ones /v1/chat/completions uses. Content the local models cannot take (images, documents, extended
thinking, server tools, MCP servers) is a 400 naming it, never dropped.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lokal.errors import InvalidRequest, LokalError, Overloaded
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.common import MAX_TOKENS_CAP

# Block types of the Messages API that local models cannot take: each is refused by name.
_REFUSED_BLOCKS = {
    "image": "images are not supported (lokal's models read text only)",
    "document": "documents are not supported (send the text as a text block)",
    "search_result": "search_result blocks are not supported (send the text as a text block)",
    "thinking": "thinking blocks are not supported (extended thinking is not available)",
    "redacted_thinking": "redacted_thinking blocks are not supported (extended thinking is not available)",
    "server_tool_use": "server tools are not supported",
    "web_search_tool_result": "server tools are not supported",
    "container_upload": "containers are not supported",
}
_BLOCKS = {"user": ("text", "tool_result"), "assistant": ("text", "tool_use")}
TOOL_ERROR_PREFIX = "Error: "  # how a tool_result with is_error reaches the model: templates have no error flag


class MessagesModel(BaseModel):
    # Fields that cannot change the answer (metadata, cache_control, service_tier, ...) are accepted and
    # ignored, as OpenAIModel does; those that would are declared and refused by name.
    model_config = ConfigDict(extra="ignore")


# -- request ---------------------------------------------------------------------------------------------------
class TextBlock(MessagesModel):
    type: Literal["text"]
    text: str


class ToolUseBlock(MessagesModel):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(MessagesModel):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock] | None = None
    is_error: bool = False

    def text(self) -> str:
        if self.content is None:
            text = ""
        elif isinstance(self.content, str):
            text = self.content
        else:
            text = "\n".join(b.text for b in self.content)
        return TOOL_ERROR_PREFIX + text if self.is_error else text


Block = TextBlock | ToolUseBlock | ToolResultBlock


class InputMessage(MessagesModel):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(MessagesModel):
    type: Literal["custom"] | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None  # the whole schema enforced, or a 400 naming what cannot be (as in chat)

    def to_chat(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.input_schema}
        if self.description:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


class ToolChoice(MessagesModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError('tool_choice {"type": "tool"} needs the name of the tool')
        return self

    def to_chat(self) -> str | dict[str, Any]:
        if self.type == "tool":
            return {"type": "function", "function": {"name": self.name}}
        return {"auto": "auto", "any": "required", "none": "none"}[self.type]


class OutputFormat(MessagesModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(MessagesModel):
    format: OutputFormat | None = None
    effort: str | None = None

    @field_validator("effort")
    @classmethod
    def _no_effort(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("effort is not supported (lokal's models have no reasoning-effort setting); omit it")
        return v


class CountTokensRequest(MessagesModel):
    """/v1/messages/count_tokens: what a Messages request holds before generation settings."""

    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    thinking: dict[str, Any] | None = None
    mcp_servers: list[Any] | None = None
    container: Any = None
    context_management: Any = None

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        """Refusals that name the field, raised as InvalidRequest so the message is exactly this one."""
        if not isinstance(data, dict):
            return data
        for i, message in enumerate(data.get("messages") or ()):
            _check_blocks(i, message)
        for i, tool in enumerate(data.get("tools") or ()):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise InvalidRequest(
                    f"tools.{i}: the server tool {kind!r} is not supported; lokal calls your own tools "
                    "(name, description, input_schema)",
                    param=f"tools.{i}.type",
                )
        thinking = data.get("thinking")
        if thinking is not None and not (isinstance(thinking, dict) and thinking.get("type") == "disabled"):
            raise InvalidRequest(
                "thinking is not supported: lokal's models have no extended-thinking mode; omit it",
                param="thinking",
            )
        for name in ("mcp_servers", "container", "context_management"):
            if data.get(name) not in (None, []):
                raise InvalidRequest(f"{name} is not supported by lokal; omit it", param=name)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CountTokensRequest:
        choice, names = self.tool_choice, [t.name for t in self.tools or ()]
        if choice is not None and choice.type in ("any", "tool") and not names:
            raise InvalidRequest(f"tool_choice {choice.type!r} needs tools", param="tool_choice")
        if choice is not None and choice.type == "tool" and choice.name not in names:
            raise InvalidRequest(
                f"tool_choice names the tool {choice.name!r}, which is not among the tools ({', '.join(names)})",
                param="tool_choice.name",
            )
        if self.messages[-1].role == "assistant":
            raise InvalidRequest(
                "the last message is an assistant turn: lokal does not continue a prefilled answer; end with a "
                "user message",
                param=f"messages.{len(self.messages) - 1}.role",
            )
        return self

    def chat_fields(self) -> dict[str, Any]:
        """The ChatCompletionRequest fields this request gives (messages, tools, tool_choice, format)."""
        out: dict[str, Any] = {"model": self.model, "messages": self._chat_messages()}
        if self.tools:
            out["tools"] = [t.to_chat() for t in self.tools]
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice.to_chat()
            if self.tool_choice.disable_parallel_tool_use:
                out["parallel_tool_calls"] = False
        fmt = self.output_config.format if self.output_config else None
        if fmt is not None:
            json_schema = {"name": "output", "schema": fmt.schema_, "strict": True}
            out["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        return out

    def _chat_messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.system:
            system = self.system if isinstance(self.system, str) else "\n".join(b.text for b in self.system)
            out.append({"role": "system", "content": system})
        for m in self.messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
            elif m.role == "assistant":
                text = "".join(b.text for b in m.content if isinstance(b, TextBlock))
                calls = [
                    {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                    for b in m.content
                    if isinstance(b, ToolUseBlock)
                ]
                out.append({"role": "assistant", "content": text or None, "tool_calls": calls or None})
            else:
                out.extend(_user_turn(m.content))
        return out

    def to_chat(self, **fields: Any) -> ChatCompletionRequest:
        try:
            return ChatCompletionRequest.model_validate({**self.chat_fields(), **fields})
        except ValidationError as exc:  # our own checks run first; what is left is worded for chat completions
            err = exc.errors()[0]
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            raise InvalidRequest(msg) from None


def _check_blocks(i: int, message: Any) -> None:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return
    role = message.get("role")
    for j, block in enumerate(message["content"]):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"messages.{i}.content.{j}"
        if kind in _REFUSED_BLOCKS:
            raise InvalidRequest(f"{where}: {_REFUSED_BLOCKS[kind]}", param=f"{where}.type")
        allowed = _BLOCKS.get(role) if isinstance(role, str) else None
        if allowed is not None and kind not in allowed:
            raise InvalidRequest(
                f"{where}: a {role} message takes {' and '.join(allowed)} blocks, not {kind!r}",
                param=f"{where}.type",
            )
        if kind == "tool_result" and isinstance(block.get("content"), list):
            for k, part in enumerate(block["content"]):
                inner = part.get("type") if isinstance(part, dict) else None
                if inner != "text":
                    why = _REFUSED_BLOCKS.get(str(inner), f"{inner!r} blocks are not supported here")
                    raise InvalidRequest(f"{where}.content.{k}: {why}", param=f"{where}.content.{k}.type")


def _user_turn(blocks: list[Block]) -> list[dict[str, Any]]:
    """Tool results become tool messages (chat templates render them as the answer to their call); the text
    around them stays user text, in order."""
    out: list[dict[str, Any]] = []
    text: list[str] = []
    for b in blocks:
        if isinstance(b, ToolResultBlock):
            if text:
                out.append({"role": "user", "content": "".join(text)})
                text = []
            out.append({"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()})
        elif isinstance(b, TextBlock):
            text.append(b.text)
    if text or not out:
        out.append({"role": "user", "content": "".join(text)})
    return out


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=MAX_TOKENS_CAP)  # required, as at Anthropic
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)  # None: lokal's default, as in chat
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v and any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
        return v

    def to_chat_stream(self) -> ChatCompletionRequest:
        """Always a stream: both answer forms are read from chunks, so that a stop sequence can be seen as it
        comes (the engine drops the one it stops on and cannot say which it was) and the generation stopped."""
        fields: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for name in ("temperature", "top_p", "top_k"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return self.to_chat(**fields)


# -- response ------------------------------------------------------------------------------------------------
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


Content = TextContent | ToolUseContent


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[Content]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


class CountTokensResponse(BaseModel):
    input_tokens: int


# -- stream events -------------------------------------------------------------------------------------------
class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: Message


class Ping(BaseModel):
    type: Literal["ping"] = "ping"


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: Content


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | InputJsonDelta


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class StopInfo(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None = None


class DeltaUsage(BaseModel):
    """Cumulative, as at Anthropic. input_tokens is here because message_start goes out before the engine has
    counted the prompt; the anthropic SDK takes it from here into the final message."""

    input_tokens: int
    output_tokens: int


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: StopInfo
    usage: DeltaUsage


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


StreamEvent = (
    MessageStart | Ping | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta | MessageStop
)


# -- errors --------------------------------------------------------------------------------------------------
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Anthropic's error body, and the `error` event that ends a stream that failed after it began."""

    type: Literal["error"] = "error"
    error: ErrorDetail

    @classmethod
    def of(cls, exc: LokalError) -> ErrorBody:
        # Overloaded: a full queue, or a server still starting.
        kind = "overloaded_error" if isinstance(exc, Overloaded) else _ERROR_TYPES.get(exc.status_code, "api_error")
        return cls(error=ErrorDetail(type=kind, message=exc.message))


__all__ = [
    "Content",
    "ContentBlockDelta",
    "ContentBlockStart",
    "ContentBlockStop",
    "CountTokensRequest",
    "CountTokensResponse",
    "DeltaUsage",
    "ErrorBody",
    "InputJsonDelta",
    "InputMessage",
    "Message",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "MessageUsage",
    "MessagesRequest",
    "Ping",
    "StopInfo",
    "StopReason",
    "StreamEvent",
    "TextContent",
    "TextDelta",
    "Tool",
    "ToolChoice",
    "ToolUseContent",
]
