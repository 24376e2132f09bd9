"""What lokal sends back on /v1: chat completions and their chunks, text completions, embeddings, model cards,
errors. Every OpenAI response body is one of these models; routes and features never build the dicts by hand.

Optional parts OpenAI leaves out rather than sending as null (a delta's role, a chunk's usage, a message's
tool_calls) are excluded when unset, so the bytes match what clients written against OpenAI expect.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lokal.errors import LokalError
from lokal.protocol.logprobs import ChatLogprobs, CompletionLogprobs

FinishReason = Literal["stop", "length", "tool_calls"]


def _unset(value: object) -> bool:
    return value is None


def omitted_if_none() -> Any:
    """A field that is left out of the JSON while it is None."""
    return Field(default=None, exclude_if=_unset)


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ErrorDetail(WireModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(WireModel):
    """OpenAI's error body: the JSON of every 4xx/5xx, and the last frame of a stream that failed after it began."""

    error: ErrorDetail

    @classmethod
    def of(cls, exc: LokalError) -> ErrorBody:
        return cls(error=ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code))


# -- chat ------------------------------------------------------------------------------------------------------
class FunctionCall(WireModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str | None  # null when the answer is only tool calls
    tool_calls: list[ToolCall] | None = omitted_if_none()


class ChatChoice(WireModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(WireModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage
    lokal_router: dict[str, Any] | None = omitted_if_none()  # model="auto": which model answered, and why


class FunctionDelta(WireModel):
    name: str | None = omitted_if_none()
    arguments: str | None = omitted_if_none()


class ToolCallChunk(WireModel):
    """One piece of a streamed call: the first for an index carries id, type and name; the rest argument text."""

    index: int
    id: str | None = omitted_if_none()
    type: Literal["function"] | None = omitted_if_none()
    function: FunctionDelta


class ChoiceDelta(WireModel):
    role: Literal["assistant"] | None = omitted_if_none()
    content: str | None = omitted_if_none()
    tool_calls: list[ToolCallChunk] | None = omitted_if_none()


class ChunkChoice(WireModel):
    index: int
    delta: ChoiceDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(WireModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = omitted_if_none()  # only on the last chunk, with stream_options.include_usage


# -- text completions ------------------------------------------------------------------------------------------
class CompletionChoice(WireModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None  # None on every streamed chunk but a choice's last


class Completion(WireModel):
    """A whole text completion, and also each chunk of a streamed one (OpenAI uses the same object for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = omitted_if_none()


# -- embeddings ------------------------------------------------------------------------------------------------
class Embedding(WireModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of float32s with encoding_format="base64"


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(WireModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# -- models ----------------------------------------------------------------------------------------------------
class LokalModelInfo(WireModel):
    """lokal's own facts about a catalog model (clients read them from `model_extra["lokal"]`)."""

    variant: str
    engine: str
    device: str
    task: str
    synthetic: bool
    cached: bool
    loaded: bool
    context_length: int
    capabilities: list[str]
    description: str = ""
    # Why this variant serves the alias here ("cpu; engine onnx (llama-cpp-python is not installed: ...)"), and
    # whether its engine is installed (False: a request for it answers engine_unavailable with the command).
    engine_installed: bool = True
    why: str = ""


class LokalRouterInfo(WireModel):
    router: Literal[True] = True
    task: Literal["chat-completion"] = "chat-completion"


class ModelCard(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    lokal: LokalModelInfo | LokalRouterInfo | None = omitted_if_none()


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


__all__ = [
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "ChoiceDelta",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "Embedding",
    "EmbeddingList",
    "EmbeddingUsage",
    "ErrorBody",
    "ErrorDetail",
    "FinishReason",
    "FunctionCall",
    "FunctionDelta",
    "LokalModelInfo",
    "LokalRouterInfo",
    "ModelCard",
    "ModelList",
    "ToolCall",
    "ToolCallChunk",
    "Usage",
    "WireModel",
]
