"""Pieces shared by the OpenAI request and response models."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TOKENS_CAP = 1_000_000  # anything above is a typo, not a request


class OpenAIModel(BaseModel):
    # Clients send fields we don't use (user, logit_bias, ...): accept and ignore rather than fail their code.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class ResponseFormat(OpenAIModel):
    type: str = "text"


class SamplingParams(OpenAIModel):
    model: str = Field(min_length=1)
    max_tokens: int | None = None
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    ignore_eos: bool = False  # vLLM/llama.cpp extension: benchmarks force a fixed output length

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("max_tokens must be a positive integer")
        if v is not None and v > MAX_TOKENS_CAP:
            raise ValueError(f"max_tokens {v} is absurd; the largest accepted value is {MAX_TOKENS_CAP}")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
