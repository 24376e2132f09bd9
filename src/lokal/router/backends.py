"""What the router's executor calls: a backend answers one chat request for one candidate, whole or streamed.

Two implementations: :class:`InProcessBackend` (the server's own serving path, so a local candidate gets the
server's metrics, queues and TTLs, and the client's request goes through untouched but for its model) and
:class:`lokal.router.upstream.HttpBackend` (any OpenAI-compatible endpoint). Both hand back the OpenAI body or
chunks with ``model`` already set to the catalog alias that answered, so the executor never rewrites JSON.

A backend raises :class:`CallFailed` (or a LokalError, which the executor sorts the same way) when a call
fails; once a stream has delivered chunks, a failure ends it with the same exception.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Protocol

from lokal.engines.base import ToolCallDelta
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.chunks import ChatChunks
from lokal.protocol.common import StreamOptions, as_dict
from lokal.protocol.outputs import ChatCompletion
from lokal.protocol.sse import Item
from lokal.router.catalog import Endpoint

if TYPE_CHECKING:  # type only: `lokal route` against remote endpoints loads no model runtime
    from lokal.runtime.services import ServingView

# Parameters forwarded to an upstream (and the ones that change an answer, so the cache keys on them).
FORWARDED_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
)
# What apps and agents send beyond sampling (issue 12): forwarded as they came, and never answered from the
# router's text cache, which keeps content only.
STRUCTURED_PARAMS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "n",
)
# llama.cpp/vLLM extensions the openai client has no argument for: they travel in the body as they are.
EXTENSION_PARAMS = ("top_k", "min_p", "repeat_penalty", "repetition_penalty")


class CallFailed(Exception):
    """``retryable``: the same model may answer if asked again (5xx, 429, connection reset).
    ``cool``: the model should rest a while (server-side trouble, not a bad request)."""

    def __init__(self, message: str, *, retryable: bool, cool: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.cool = cool
        self.status = status


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English under BPE tokenizers; only used when an upstream reports no usage.
    return max(1, len(text) // 4) if text else 0


def structured(params: Mapping[str, Any]) -> bool:
    """A request whose answer is more than text: the text cache can neither answer nor keep it."""
    fmt = params.get("response_format")
    return any(params.get(k) not in (None, False, 1) for k in STRUCTURED_PARAMS) or (
        isinstance(fmt, Mapping) and fmt.get("type") == "json_schema"
    )


@dataclass(frozen=True, slots=True)
class Target:
    """One candidate, resolved: ``endpoint`` None means the server's own models (in-process)."""

    model: str  # the catalog alias: what the client sees as ``model``
    upstream_model: str
    endpoint: Endpoint | None
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat request as a backend needs it. ``messages`` go upstream as they are (tool turns included);
    ``body`` is the client's own request when the server routes it (the in-process backend serves that)."""

    messages: Sequence[Mapping[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    body: ChatCompletionRequest | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    completion: ChatCompletion  # model = the alias
    content: str
    prompt_tokens: int
    completion_tokens: int
    model_id: str  # what served it (the engine's variant id, or the upstream's model name)


@dataclass(frozen=True, slots=True)
class Delta:
    """One chunk of a streamed answer: as the client gets it, and what the executor reads from it."""

    item: Item
    text: str = ""
    usage: tuple[int, int] | None = None
    substantive: bool = False  # content, tool calls, logprobs or a finish: more than the role or usage


@dataclass(slots=True)
class Opened:
    """A stream that was started: which model serves it, and its chunks."""

    model_id: str
    deltas: AsyncIterator[Delta]

    async def aclose(self) -> None:
        close = getattr(self.deltas, "aclose", None)
        if close is not None:
            await close()


class Backend(Protocol):
    async def complete(self, target: Target, call: ChatCall) -> Answer: ...

    async def stream(self, target: Target, call: ChatCall) -> Opened: ...


def read_chunk(chunk: Mapping[str, Any]) -> tuple[str, tuple[int, int] | None, bool]:
    """Text, usage and whether an OpenAI chunk dict carries more than the role or the usage."""
    parts: list[str] = []
    substantive = False
    for ch in chunk.get("choices") or ():
        delta = ch.get("delta") or {}
        text = delta.get("content") or ""
        parts.append(text)
        if text or delta.get("tool_calls") or ch.get("logprobs") or ch.get("finish_reason"):
            substantive = True
    u = chunk.get("usage")
    usage = (int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)) if u else None
    return "".join(parts), usage, substantive


def answer_text(body: ChatCompletion) -> str:
    return (body.choices[0].message.content or "") if body.choices else ""


class InProcessBackend:
    """The server's own models: ``Serving.chat`` with the client's request, model replaced by the candidate's."""

    def __init__(self, serving: ServingView) -> None:
        self.serving = serving

    def _request(self, target: Target, call: ChatCall, stream: bool) -> ChatCompletionRequest:
        if call.body is None:
            raise CallFailed("the in-process backend serves the client's own request", retryable=False, cool=False)
        update: dict[str, Any] = {"model": target.upstream_model, "stream": stream}
        if stream:  # the trace wants real usage; the executor drops the chunk when the client did not ask
            update["stream_options"] = StreamOptions(include_usage=True)
        return call.body.model_copy(update=update)

    async def complete(self, target: Target, call: ChatCall) -> Answer:
        outcome = await self.serving.chat(self._request(target, call, stream=False))
        body = outcome.body
        assert isinstance(body, ChatCompletion)
        body.model = target.model  # the alias that answered; the engine's variant id stays in x-lokal-model
        u = body.usage
        return Answer(body, answer_text(body), u.prompt_tokens, u.completion_tokens, outcome.model_id)

    async def stream(self, target: Target, call: ChatCall) -> Opened:
        outcome = await self.serving.chat(self._request(target, call, stream=True))
        assert outcome.stream is not None
        return Opened(outcome.model_id, _renamed(outcome.stream, outcome.model_id, target.model))


async def _renamed(stream: Any, model_id: str, alias: str) -> AsyncIterator[Delta]:
    # Serialised chunks name the model before any content, so replacing its first occurrence is exact.
    old, new = f'"model":{encode_basestring(model_id)}', f'"model":{encode_basestring(alias)}'
    try:
        async for item in stream:
            if isinstance(item, str):
                chunk = json.loads(item)
                item = item.replace(old, new, 1)
            else:
                chunk = as_dict(item)
                if hasattr(item, "model"):
                    item = item.model_copy(update={"model": alias})
            text, usage, substantive = read_chunk(chunk)
            yield Delta(item, text, usage, substantive)
    finally:
        await stream.aclose()  # stops the engine at its next token, however the stream ended


def completion_deltas(body: ChatCompletion, include_usage: bool = True) -> list[Delta]:
    """A whole answer (a cache hit, an upstream that ignored ``stream``) as the chunks a stream of it holds."""
    chunks = ChatChunks(body.id, body.created, body.model, body.system_fingerprint)
    out: list[Delta] = []
    for choice in body.choices:
        out.append(Delta(chunks.role(choice.index)))
        text = choice.message.content or ""
        if text:
            out.append(Delta(chunks.content(choice.index, text), text, None, True))
        if choice.message.tool_calls:
            calls = [
                ToolCallDelta(n, c.id, c.function.name, c.function.arguments)
                for n, c in enumerate(choice.message.tool_calls)
            ]
            out.append(Delta(chunks.tool_calls(choice.index, calls), "", None, True))
        out.append(Delta(chunks.finish(choice.index, choice.finish_reason), "", None, True))
    if include_usage:
        u = body.usage
        out.append(Delta(chunks.usage(u), "", (u.prompt_tokens, u.completion_tokens)))
    return out


__all__ = [
    "EXTENSION_PARAMS",
    "FORWARDED_PARAMS",
    "STRUCTURED_PARAMS",
    "Answer",
    "Backend",
    "CallFailed",
    "ChatCall",
    "Delta",
    "InProcessBackend",
    "Opened",
    "Target",
    "answer_text",
    "completion_deltas",
    "estimate_tokens",
    "read_chunk",
    "structured",
]
