"""/v1/completions (legacy text completion) request shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from lokal.engines.base import GenerationRequest
from lokal.errors import InvalidRequest
from lokal.protocol import unsupported
from lokal.protocol.common import SamplingParams
from lokal.protocol.unsupported import Unsupported

MAX_LOGPROBS = 20  # OpenAI stops at 5; vLLM and llama-server allow 20, as lokal's chat API does


class CompletionRequest(SamplingParams):
    unsupported_fields: ClassVar[Mapping[str, Unsupported]] = unsupported.COMPLETIONS

    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)  # how many alternatives per token
    suffix: Any = None
    best_of: Any = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    @field_validator("logprobs", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        if isinstance(v, bool):  # the chat API's boolean sent here: say what this API wants
            raise ValueError("logprobs on /v1/completions is how many alternatives to list per token (0-20)")
        return v

    @model_validator(mode="after")
    def _no_prompt_logprobs(self) -> CompletionRequest:
        if self.echo and self.logprobs is not None:
            raise InvalidRequest(
                "logprobs with echo (log probabilities of the prompt's tokens) is not supported; send one of them",
                param="logprobs",
            )
        return self

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def to_engine(self, max_tokens: int | None) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt_text,
            max_tokens=max_tokens,
            logprobs=self.logprobs,
            **self.sampling(),
        )
