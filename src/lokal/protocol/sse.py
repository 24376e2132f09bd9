"""Server-sent events: the bytes of every streamed answer (chat, completions, Responses, Messages) come from here.

OpenAI-style streams are bare `data:` frames ending with `data: [DONE]`; the Responses and Anthropic Messages
streams name each frame with an `event:` line. A failure after the first byte, when the status line is long
gone, is one error frame in the stream's own shape (and no [DONE], so the stream cannot pass for complete).
Comment frames (`: ...`) keep a connection alive through a long prompt read: every SSE client ignores them.

`encode` is the one writer. Plain StreamingResponse rather than sse-starlette's EventSourceResponse: the
latter's ping/sender task group added ~10 ms to the first token (measured). Starlette still cancels the
generator when the client disconnects, and `encode` passes that on to the chunk iterator, which stops the
engine at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from lokal.errors import EngineError, LokalError
from lokal.protocol.outputs import ErrorBody

log = logging.getLogger("lokal.server")

DONE = "data: [DONE]\n\n"
# Seconds without a first item before a comment frame goes out, and between comments until the item comes.
KEEPALIVE_S = 3.0


def data(payload: str) -> str:
    """One unnamed frame; `payload` is serialised JSON (one line)."""
    return f"data: {payload}\n\n"


def event(name: str, payload: str) -> str:
    """One named frame (Responses and Messages streams)."""
    return f"event: {name}\ndata: {payload}\n\n"


def comment(text: str = "keep-alive") -> str:
    return f": {text}\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    """A named frame in a stream handed to `encode`."""

    name: str
    payload: str | BaseModel


# What a stream hands to `encode`: serialised JSON (the fast path), a typed payload, or a named frame.
Item = str | BaseModel | Event
ErrorFrame = Callable[[LokalError], str]


def openai_error(exc: LokalError) -> str:
    """OpenAI's error body as the stream's last frame: the openai SDK raises it as an APIError."""
    return data(ErrorBody.of(exc).model_dump_json())


def frame(item: Item) -> str:
    if isinstance(item, str):
        return f"data: {item}\n\n"
    if isinstance(item, Event):
        payload = item.payload if isinstance(item.payload, str) else item.payload.model_dump_json()
        return event(item.name, payload)
    return f"data: {item.model_dump_json()}\n\n"


async def encode(
    items: AsyncIterator[Item],
    *,
    done: bool = True,
    error: ErrorFrame = openai_error,
    keepalive_s: float | None = None,
) -> AsyncIterator[str]:
    """SSE text of `items`. `done`: end with `data: [DONE]` (OpenAI streams; not Responses or Messages).
    `error`: the frame a failure becomes once the stream has begun. Until the first item arrives, a comment
    frame goes out every `keepalive_s` seconds (default KEEPALIVE_S; 0 turns them off)."""
    every = KEEPALIVE_S if keepalive_s is None else keepalive_s
    try:
        first = asyncio.ensure_future(anext(items))
        try:
            while every > 0:
                ready, _ = await asyncio.wait({first}, timeout=every)
                if ready:
                    break
                yield comment()
            item = await first
        except StopAsyncIteration:
            item = None
        except BaseException:
            if not first.done():  # the client left while the first item was on its way: stop the work
                first.cancel()
                with contextlib.suppress(BaseException):
                    await first
            raise
        if item is not None:
            yield frame(item)
            async for item in items:
                yield frame(item)
        if done:
            yield DONE
    except LokalError as exc:
        yield error(exc)
    except Exception as exc:
        log.exception("stream failed after it started")
        yield error(EngineError(f"internal error: {type(exc).__name__}: {exc}"))
    finally:
        await items.aclose()  # type: ignore[attr-defined]


__all__ = [
    "DONE",
    "KEEPALIVE_S",
    "ErrorFrame",
    "Event",
    "Item",
    "comment",
    "data",
    "encode",
    "event",
    "frame",
    "openai_error",
]
