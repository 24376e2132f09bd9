"""A chat Outcome read as the OpenAI chunk dicts a stream of it holds: what the Responses and Messages adapters
translate. An answer sent whole (a router's remote model, a cache hit) reads exactly like a stream of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lokal.protocol import sse
from lokal.protocol.common import as_dict
from lokal.protocol.outcome import Outcome


def whole_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole chat completion as the chunks a stream of it would add up to: one delta, then the usage."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = [{"index": i, **c} for i, c in enumerate(message.get("tool_calls") or ())]
    delta = {"content": message.get("content"), "tool_calls": calls}
    return [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": choice.get("logprobs"),
                    "finish_reason": choice.get("finish_reason"),
                }
            ]
        },
        {"choices": [], "usage": body.get("usage")},
    ]


async def chunks(outcome: Outcome) -> AsyncIterator[dict[str, Any]]:
    if outcome.body is not None:
        for chunk in whole_chunks(as_dict(outcome.body)):
            yield chunk
        return
    assert outcome.stream is not None
    async for item in outcome.stream:
        payload = item.payload if isinstance(item, sse.Event) else item
        if payload != "[DONE]":
            yield as_dict(payload)


async def close(outcome: Outcome | None) -> None:
    if outcome is not None and outcome.stream is not None:
        await outcome.stream.aclose()  # stops the engine at its next token


__all__ = ["chunks", "close", "whole_chunks"]
