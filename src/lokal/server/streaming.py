"""Streamed chat and text completions: engine events of each choice in, typed chunks (or their pre-serialised
JSON, on the per-token hot path) out. protocol/sse.py turns what comes out of here into bytes.

With n > 1 every choice is its own engine request; their chunks interleave as they come, each carrying its
choice index, as at OpenAI.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from lokal.engines.base import GenerationEvent, ToolCallDelta
from lokal.protocol.chunks import ChatChunks, CompletionChunks
from lokal.protocol.sse import Item
from lokal.server.choices import ChoiceReader, Step


@dataclass(eq=False, slots=True)
class Choice:
    """One choice's engine request in flight: its first event (awaited apart, see serving) and the rest."""

    reader: ChoiceReader
    first: asyncio.Future[GenerationEvent]
    events: AsyncIterator[GenerationEvent]
    t_first: float | None = field(default=None)  # when its first text arrived

    @property
    def index(self) -> int:
        return self.reader.index

    async def close(self) -> None:
        """Stops the engine work (the worker sets the job's cancel flag when its event stream closes)."""
        if not self.first.done():
            self.first.cancel()
            with contextlib.suppress(BaseException):
                await self.first
        elif not self.first.cancelled():
            self.first.exception()  # retrieved: an error already raised elsewhere is not logged as lost
        await self.events.aclose()  # type: ignore[attr-defined]


async def chat_items(chunks: ChatChunks, c: Choice) -> AsyncIterator[Item]:
    reader, i = c.reader, c.index
    ev: GenerationEvent | None = await c.first
    yield chunks.role(i)
    parses = reader.parses
    while ev is not None:
        if parses or ev.logprobs or ev.tool_calls:
            for item in chat_step(chunks, i, reader.step(ev)):
                yield item
        else:
            reader.advance(ev)
            if ev.text:
                yield chunks.text(i, ev.text)
        if c.t_first is None and ev.text:
            c.t_first = time.perf_counter()
        ev = await anext(c.events, None)
    reader.check_complete()
    for item in chat_step(chunks, i, reader.close()):
        yield item
    yield chunks.finish(i, reader.finish_reason())


def chat_step(chunks: ChatChunks, i: int, step: Step) -> list[Item]:
    """Chunks of one step, in order: runs of content, runs of tool-call pieces; logprobs ride on the first
    content chunk (or a chunk of their own when the step has no content)."""
    out: list[Item] = []
    text: list[str] = []
    calls: list[ToolCallDelta] = []
    logprobs = step.logprobs

    def flush_text() -> None:
        nonlocal logprobs
        if text:
            joined = "".join(text)
            out.append(chunks.content(i, joined, logprobs) if logprobs else chunks.text(i, joined))
            logprobs = ()
            text.clear()

    for piece in step.pieces:
        if isinstance(piece, str):
            if calls:
                out.append(chunks.tool_calls(i, calls))
                calls = []
            if piece:
                text.append(piece)
        else:
            flush_text()
            calls.append(piece)
    flush_text()
    if calls:
        out.append(chunks.tool_calls(i, calls))
    if logprobs:
        out.append(chunks.logprobs_only(i, logprobs))
    return out


async def completion_items(chunks: CompletionChunks, c: Choice, echo: str) -> AsyncIterator[Item]:
    reader, i = c.reader, c.index
    ev: GenerationEvent | None = await c.first
    if echo:
        yield chunks.text(i, echo)
    while ev is not None:
        if ev.logprobs:
            step = reader.step(ev)
            yield chunks.content(i, ev.text, step.logprobs, step.offsets)
        else:
            reader.advance(ev)
            if ev.text:
                yield chunks.text(i, ev.text)
        if c.t_first is None and ev.text:
            c.t_first = time.perf_counter()
        ev = await anext(c.events, None)
    reader.check_complete()
    yield chunks.finish(i, reader.finish_reason())


_END = object()


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


async def merged(streams: list[AsyncIterator[Item]]) -> AsyncGenerator[Item, None]:
    """The items of every stream as they come; the first failure ends them all."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield item
        return
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump(stream: AsyncIterator[Item]) -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
        except BaseException as exc:  # handed to the reader, which raises it
            queue.put_nowait(_Failed(exc))
        finally:
            queue.put_nowait(_END)

    tasks = [asyncio.ensure_future(pump(s)) for s in streams]
    try:
        running = len(tasks)
        while running:
            got = await queue.get()
            if got is _END:
                running -= 1
            elif isinstance(got, _Failed):
                raise got.error
            else:
                yield cast(Item, got)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Choice", "chat_items", "chat_step", "completion_items", "merged"]
