"""/v1/chat/completions request and response shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lokal.engines.base import ChatMessage, GenerationRequest
from lokal.protocol.common import OpenAIModel, ResponseFormat, SamplingParams

Role = Literal["system", "user", "assistant", "tool", "developer"]


class Message(OpenAIModel):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

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
    messages: list[Message] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    max_completion_tokens: int | None = None

    @field_validator("response_format")
    @classmethod
    def _format(cls, v: ResponseFormat | None) -> ResponseFormat | None:
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
