"""Log probabilities as the two OpenAI APIs write them: chat's list of token entries, and the legacy completions
API's parallel arrays. Built from the engine's TokenLogprob values, one entry per generated token."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from lokal.engines.base import TokenLogprob as EngineLogprob


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopLogprob(_Wire):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(_Wire):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Wire):
    content: list[TokenLogprob] | None


class CompletionLogprobs(_Wire):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]  # the most likely tokens at each position, token -> logprob
    text_offset: list[int]  # where each token starts in the choice's text (the echoed prompt included)


def chat_entries(entries: Sequence[EngineLogprob]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=e.token,
            logprob=e.logprob,
            bytes=list(e.bytes),
            top_logprobs=[TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in e.top],
        )
        for e in entries
    ]


def chat_logprobs(entries: Sequence[EngineLogprob]) -> ChatLogprobs:
    return ChatLogprobs(content=chat_entries(entries))


def completion_logprobs(entries: Sequence[EngineLogprob], offsets: Sequence[int]) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{t.token: t.logprob for t in e.top} for e in entries],
        text_offset=list(offsets),
    )


def text_offsets(start: int, entries: Sequence[EngineLogprob]) -> list[int]:
    """Offsets of `entries`' tokens in the text, the first starting at `start`."""
    out: list[int] = []
    pos = start
    for e in entries:
        out.append(pos)
        pos += len(e.token)
    return out


__all__ = [
    "ChatLogprobs",
    "CompletionLogprobs",
    "TokenLogprob",
    "TopLogprob",
    "chat_entries",
    "chat_logprobs",
    "completion_logprobs",
    "text_offsets",
]
