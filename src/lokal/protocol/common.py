"""Pieces shared by the OpenAI request and response models."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from lokal.protocol import unsupported
from lokal.protocol.unsupported import Unsupported

MAX_TOKENS_CAP = 1_000_000  # anything above is a typo, not a request
MAX_CHOICES = 8  # n: each choice is one more engine request
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
_DEFAULTS: dict[str, Any] = {
    "temperature": DEFAULT_TEMPERATURE,
    "top_p": DEFAULT_TOP_P,
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def check_max_tokens(field: str, v: int | None) -> int | None:
    """max_tokens and max_completion_tokens: positive, and not absurd."""
    if v is not None and v <= 0:
        raise ValueError(f"{field} must be a positive integer")
    if v is not None and v > MAX_TOKENS_CAP:
        raise ValueError(f"{field} {v} is absurd; the largest accepted value is {MAX_TOKENS_CAP}")
    return v


class OpenAIModel(BaseModel):
    # Clients send fields that cannot change the answer (user, metadata, ...): accept and ignore rather than
    # fail their code. Fields that would change it are refused by name (protocol/unsupported.py).
    model_config = ConfigDict(extra="ignore")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingParams(OpenAIModel):
    unsupported_fields: ClassVar[Mapping[str, Unsupported]] = unsupported.SAMPLING

    model: str = Field(min_length=1)
    max_tokens: int | None = None  # None: the engine's default (engines/base.py DEFAULT_MAX_TOKENS)
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(default=DEFAULT_TOP_P, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # OpenAI's seeds are int64
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    ignore_eos: bool = False  # vLLM/llama.cpp extension: benchmarks force a fixed output length
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None  # token id (as a string, JSON keys are) -> bias, -100..100
    # llama.cpp / vLLM extensions. None: the engine's default.
    top_k: int | None = Field(default=None, ge=0)  # 0: no top-k cut
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)  # llama.cpp's name
    repetition_penalty: float | None = Field(default=None, gt=0.0)  # vLLM's name for the same penalty

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        return check_max_tokens("max_tokens", v)

    @field_validator("temperature", "top_p", "n", "presence_penalty", "frequency_penalty", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any, info: ValidationInfo) -> Any:
        # OpenAI's schema makes these nullable; null means "the default", not a 400.
        if v is None:
            return _DEFAULTS[str(info.field_name)]
        return v

    @field_validator("n", "top_k", mode="before")
    @classmethod
    def _whole_number(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool):  # JSON true is not 1
            raise ValueError(f"{info.field_name} must be an integer")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.isascii() or not key.isdigit():
                raise ValueError(f"logit_bias keys must be token ids written as integer strings, not {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias for token {key} is {bias}; biases go from -100 to 100")
        return v

    @model_validator(mode="after")
    def _one_repeat_penalty(self) -> SamplingParams:
        a, b = self.repeat_penalty, self.repetition_penalty
        if a is not None and b is not None and a != b:
            raise ValueError(f"repeat_penalty ({a}) and repetition_penalty ({b}) name the same penalty; send one")
        return self

    @field_validator(*unsupported.FIELDS, check_fields=False)
    @classmethod
    def _refuse_unsupported(cls, v: Any, info: ValidationInfo) -> Any:
        return unsupported.check(cls.unsupported_fields, info.field_name, v)

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

    def sampling(self) -> dict[str, Any]:
        """The GenerationRequest fields every kind of request shares."""
        penalty = self.repeat_penalty if self.repeat_penalty is not None else self.repetition_penalty
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": tuple(self.stop_list()),
            "seed": self.seed,
            "ignore_eos": self.ignore_eos,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": 1.0 if penalty is None else penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": {int(k): float(b) for k, b in (self.logit_bias or {}).items()},
        }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def as_dict(obj: Any) -> dict[str, Any]:
    """A response object as the JSON dict a client receives: from a pydantic model, serialised JSON or a dict."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_none=False)
    if isinstance(obj, str | bytes):
        import json

        loaded = json.loads(obj)
        if not isinstance(loaded, dict):
            raise TypeError(f"expected a JSON object, got {type(loaded).__name__}")
        return loaded
    if isinstance(obj, dict):
        return obj
    raise TypeError(f"cannot read a response from {type(obj).__name__}")
