"""/v1/embeddings request shape."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lokal.protocol.common import OpenAIModel

MAX_INPUTS = 2048


class EmbeddingRequest(OpenAIModel):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)  # only the model's own size is served (serving checks)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("input must not be empty")
        if isinstance(v, list) and len(v) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request")
        return v

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
