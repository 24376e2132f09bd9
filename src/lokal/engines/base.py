"""The one interface every engine implements, and the values that cross it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from lokal.catalog.spec import ModelSpec, Variant

FinishReason = Literal["stop", "length", "error", "cancelled"]
# Without max_tokens a small model that loops would otherwise hold its slot to the end of the context (8k tokens
# by default: minutes on a CPU). 4096 still fits any whole answer people ask for (a long file of code, a
# reasoning trace); llama-server, Ollama and vLLM run to the end of the context, which is what this bounds.
DEFAULT_MAX_TOKENS = 4096  # a client that wants more says so with max_tokens


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Either chat messages (the engine applies the model's template) or a raw prompt."""

    messages: Sequence[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS, or what is left of the context if less
    temperature: float = 0.8
    top_p: float = 0.95
    stop: Sequence[str] = ()
    seed: int | None = None
    json_mode: bool = False
    ignore_eos: bool = False  # benchmarks force a fixed output length


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: str | None = None


def token_budget(n_ctx: int, prompt_tokens: int, max_tokens: int | None) -> int:
    """How many tokens may be generated; an explicit request that cannot fit is an error, as at OpenAI.

    Without max_tokens: DEFAULT_MAX_TOKENS, or the room left in the context when that is less. Every local
    engine budgets here, so the default is the same on each."""
    from lokal.errors import ContextLengthExceeded

    if max_tokens is None:
        if prompt_tokens < n_ctx:
            return min(DEFAULT_MAX_TOKENS, n_ctx - prompt_tokens)
        max_tokens = 1  # falls through to the error below
    if prompt_tokens + max_tokens > n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
        )
    return max_tokens


@dataclass(slots=True)
class EngineInfo:
    memory_bytes: int = 0
    load_seconds: float = 0.0
    context_length: int = 0
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """Not thread-safe: the runtime gives each loaded engine its own worker thread."""

    info: EngineInfo

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None: ...

    def count_tokens(self, req: GenerationRequest) -> int: ...

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def unload(self) -> None: ...
