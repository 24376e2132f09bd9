"""/v1/completions (legacy text completion) request shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import field_validator

from lokal.engines.base import GenerationRequest
from lokal.protocol import unsupported
from lokal.protocol.common import SamplingParams
from lokal.protocol.unsupported import Unsupported


class CompletionRequest(SamplingParams):
    unsupported_fields: ClassVar[Mapping[str, Unsupported]] = unsupported.COMPLETIONS

    prompt: str | list[str]
    echo: bool = False
    logprobs: Any = None  # declared to be refused by name (protocol/unsupported.py)
    suffix: Any = None
    best_of: Any = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def to_engine(self, max_tokens: int) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt_text,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop_list()),
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )
