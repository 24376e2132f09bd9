"""Chat-completion chunks in, Anthropic Messages events and the whole message out.

The Messages routes read every answer as a stream of OpenAI chunks (as dicts, through
lokal.protocol.common.as_dict, whatever serving's chunks are made of): content deltas become a text block, each
tool call's deltas a tool_use block, the finish and usage the message's stop_reason and usage. The same
`Translator` serves a streamed request (its events go out as SSE) and a whole one (its `message()` at the end).

Stop sequences are watched here rather than in the engine, which drops the one it stops on and cannot say
which it was: Anthropic reports it (`stop_reason: "stop_sequence"`, `stop_sequence`). When one matches, the
route closes the chunk stream, which stops the engine at its next token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

from lokal.errors import EngineError
from lokal.protocol.messages import (
    Content,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    DeltaUsage,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    MessageUsage,
    Ping,
    StopInfo,
    StopReason,
    StreamEvent,
    TextContent,
    TextDelta,
    ToolUseContent,
)

_FINISH: dict[str, StopReason] = {"length": "max_tokens", "tool_calls": "tool_use", "stop": "end_turn"}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def tool_use_id(call_id: str | None) -> str:
    """Anthropic's id form for a call: the parser's own id keeps its random part."""
    tail = (call_id or "").removeprefix("call_") or uuid.uuid4().hex[:24]
    return f"toolu_{tail}"


class StopScanner:
    """Finds the first stop sequence in streamed text. Text that may be the start of one is held back until it
    is known, so a stop sequence never reaches the client, even split across chunks."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        if self.matched is not None:
            return ""
        pending = self.held + text
        if not self.stops:
            self.held = ""
            return pending
        # The one completed first: the earliest end (the model wrote that one before the others).
        hits = [(i + len(s), i, s) for s in self.stops if (i := pending.find(s)) != -1]
        if hits:
            _, start, self.matched = min(hits)
            self.held = ""
            return pending[:start]
        keep = 0
        for s in self.stops:  # the longest tail of pending that is a proper prefix of a stop sequence
            for n in range(min(len(s) - 1, len(pending)), keep, -1):
                if pending.endswith(s[:n]):
                    keep = n
                    break
        self.held = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


@dataclass(slots=True)
class _Block:
    content: Content
    parts: list[str] = field(default_factory=list)  # text, or the tool input's JSON text
    call_index: int | None = None  # the chat tool-call index this block carries


class Translator:
    def __init__(self, model: str, stop_sequences: Sequence[str] = ()) -> None:
        self.id = message_id()
        self.model = model
        self.scanner = StopScanner(stop_sequences)
        self.blocks: list[_Block] = []
        self.open: _Block | None = None
        self.finish: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.generated: list[str] = []  # all the text the model wrote (stop sequence included), for recounts

    @property
    def stopped(self) -> bool:
        """A stop sequence matched: the rest of the generation is not wanted."""
        return self.scanner.matched is not None

    def start(self) -> list[StreamEvent]:
        empty = Message(id=self.id, model=self.model, content=[], usage=MessageUsage(input_tokens=0, output_tokens=0))
        return [MessageStart(message=empty), Ping()]

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        usage = chunk.get("usage")
        if usage:
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.generated.append(delta["content"])
                self._text(self.scanner.feed(delta["content"]), events)
                if self.stopped:
                    return events
            for call in delta.get("tool_calls") or ():
                self._call(call, events)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def end(self) -> list[StreamEvent]:
        """The last events: held-back text, the open block's stop, the stop reason and usage."""
        events: list[StreamEvent] = []
        self._text(self.scanner.flush(), events)
        self._close(events)
        info = StopInfo(stop_reason=self.stop_reason, stop_sequence=self.scanner.matched)
        usage = DeltaUsage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        events += [MessageDelta(delta=info, usage=usage), MessageStop()]
        return events

    @property
    def stop_reason(self) -> StopReason:
        if self.stopped:
            return "stop_sequence"
        if any(isinstance(b.content, ToolUseContent) for b in self.blocks) and self.finish != "length":
            return "tool_use"
        return _FINISH.get(self.finish or "stop", "end_turn")

    def message(self) -> Message:
        """The whole answer (call after `end`)."""
        content: list[Content] = []
        for b in self.blocks:
            if isinstance(b.content, TextContent):
                content.append(TextContent(text="".join(b.parts)))
            else:
                cut = self.finish == "length"
                content.append(b.content.model_copy(update={"input": _tool_input(b, partial=cut)}))
        usage = MessageUsage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        return Message(
            id=self.id,
            model=self.model,
            content=content,
            stop_reason=self.stop_reason,
            stop_sequence=self.scanner.matched,
            usage=usage,
        )

    # -- blocks ------------------------------------------------------------------------------------------------
    def _text(self, text: str, events: list[StreamEvent]) -> None:
        if not text:
            return
        if self.open is None or not isinstance(self.open.content, TextContent):
            self._open(_Block(TextContent(text="")), events)
        assert self.open is not None
        self.open.parts.append(text)
        events.append(ContentBlockDelta(index=len(self.blocks) - 1, delta=TextDelta(text=text)))

    def _call(self, call: dict[str, Any], events: list[StreamEvent]) -> None:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        current = self.open
        if current is None or current.call_index != index:
            # Text held as a possible stop sequence cannot continue past a call: it goes before the call's block.
            self._text(self.scanner.flush(), events)
            if any(b.call_index == index for b in self.blocks):
                # Anthropic blocks come one after another: a call resumed after the next began cannot be sent.
                raise EngineError(f"tool call {index} continued after a later one began")
            name = function.get("name")
            if not name:
                raise EngineError(f"tool call {index} began without a function name")
            block = _Block(ToolUseContent(id=tool_use_id(call.get("id")), name=name, input={}), call_index=index)
            self._open(block, events)
        arguments = function.get("arguments")
        if arguments:
            assert self.open is not None
            self.open.parts.append(arguments)
            events.append(ContentBlockDelta(index=len(self.blocks) - 1, delta=InputJsonDelta(partial_json=arguments)))

    def _open(self, block: _Block, events: list[StreamEvent]) -> None:
        self._close(events)
        self.blocks.append(block)
        self.open = block
        events.append(ContentBlockStart(index=len(self.blocks) - 1, content_block=block.content))

    def _close(self, events: list[StreamEvent]) -> None:
        if self.open is not None:
            events.append(ContentBlockStop(index=len(self.blocks) - 1))
            self.open = None


def _tool_input(block: _Block, *, partial: bool) -> dict[str, Any]:
    """The call's input object. `partial`: max_tokens cut the call short, and Anthropic then sends what was
    written (stop_reason max_tokens says it is incomplete), as its SDK reads a streamed one: the JSON so far."""
    text = "".join(block.parts).strip()
    if not text:
        return {}
    try:
        value = from_json(text, allow_partial="trailing-strings") if partial else json.loads(text)
    except ValueError as exc:
        raise EngineError(f"the model's tool call arguments are not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise EngineError(f"the model's tool call arguments are a JSON {type(value).__name__}, not an object")
    return value


__all__ = ["StopScanner", "Translator", "message_id", "tool_use_id"]
