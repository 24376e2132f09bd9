"""/v1/chat/completions request and response shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from lokal.engines.base import ChatMessage, GenerationRequest
from lokal.protocol import unsupported
from lokal.protocol.common import OpenAIModel, ResponseFormat, SamplingParams, check_max_tokens
from lokal.protocol.unsupported import Unsupported

Role = Literal["system", "user", "assistant", "tool", "developer"]


class Message(OpenAIModel):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # accepted, unused: chat templates have no place for a participant's name
    tool_calls: Any = None  # declared to be refused by name until tool calling lands
    function_call: Any = None
    audio: Any = None

    @field_validator(*unsupported.MESSAGE)
    @classmethod
    def _refuse_unsupported(cls, v: Any, info: ValidationInfo) -> Any:
        return unsupported.check(unsupported.MESSAGE, info.field_name, v)

    @field_validator("content")
    @classmethod
    def _text_parts(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(v, list):
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported ({'type': 'text', 'text': ...})")
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p["text"]) for p in self.content)


class ChatCompletionRequest(SamplingParams):
    unsupported_fields: ClassVar[Mapping[str, Unsupported]] = unsupported.CHAT

    messages: list[Message] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    max_completion_tokens: int | None = None
    logprobs: Any = None
    top_logprobs: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    web_search_options: Any = None

    @field_validator("max_completion_tokens")
    @classmethod
    def _positive_completion(cls, v: int | None) -> int | None:
        return check_max_tokens("max_completion_tokens", v)

    @field_validator("response_format")
    @classmethod
    def _format(cls, v: ResponseFormat | None) -> ResponseFormat | None:
        if v is not None and v.type == "json_schema":
            raise ValueError("json_schema is not supported yet; use {'type': 'json_object'} for JSON output")
        if v is not None and v.type not in ("text", "json_object"):
            raise ValueError("response_format.type must be 'text' or 'json_object'")
        return v

    def to_engine(self, max_tokens: int) -> GenerationRequest:
        return GenerationRequest(
            messages=tuple(ChatMessage(m.role if m.role != "developer" else "system", m.text()) for m in self.messages),
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop_list()),
            seed=self.seed,
            ignore_eos=self.ignore_eos,
            json_mode=self.response_format is not None and self.response_format.type == "json_object",
        )

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
