"""The one interface every engine implements, and the values that cross it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # types only: the interface needs nothing of the catalog at run time
    from lokal.catalog.spec import ModelSpec, Variant

FinishReason = Literal["stop", "length", "error", "cancelled", "tool_calls"]
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
class ToolCall:
    """One complete function call: in an assistant message sent back to the model, or parsed out of its answer."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: id and name come once (first piece of an index), then argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system, user, assistant, tool
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: which call this is the result of
    name: str | None = None  # tool turns: the function's name (some templates print it)


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The sampled token's log probability under the model (the logits the sampler saw, before temperature and
    truncation), and the `top` most likely alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


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
    top_k: int | None = None  # None: the engine's default (40 on llama.cpp)
    min_p: float | None = None  # None: the engine's default (0.05 on llama.cpp)
    repeat_penalty: float = 1.0  # llama.cpp's multiplicative penalty over the last 64 tokens; 1 = off
    presence_penalty: float = 0.0  # OpenAI's additive penalties, -2..2
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)  # token id -> bias added to its logit, -100..100
    logprobs: int | None = None  # None: off; 0-20: each sampled token's logprob and this many alternatives
    grammar: str | None = None  # GBNF the output must match (json_schema, forced tool calls); beats json_mode
    grammar_triggers: Sequence[str] = ()  # lazy grammar: free text until one of these appears, then `grammar`
    tools: Sequence[Mapping[str, Any]] = ()  # OpenAI function tools, rendered into the chat template
    # OpenAI fields an upstream that speaks the API honours itself (tool_choice, response_format,
    # parallel_tool_calls, n, ...): the remote engine forwards them as they came; local engines ignore them.
    passthrough: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: str | None = None
    # One entry per generated token whose text starts in `text` (asked for with GenerationRequest.logprobs).
    logprobs: tuple[TokenLogprob, ...] = ()
    # Engines whose upstream already parses tool calls (remote) send them here; local engines send the model's
    # raw text and serving parses the calls out of it (lokal.toolcalls).
    tool_calls: tuple[ToolCallDelta, ...] = ()


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


@runtime_checkable
class AsyncEngine(Engine, Protocol):
    """An engine that serves many requests at once on one event loop (the remote engine, in front of an upstream
    API). It is bound to the loop `start` runs on; its sync `generate`/`embed` are for callers on other threads
    (a worker thread, `lokal run` in-process) and hand the work to that loop."""

    @property
    def capacity(self) -> int:
        """Requests it takes at once now (the async worker queues the rest)."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def agenerate(self, req: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def replicas(self) -> list[dict[str, Any]]: ...
