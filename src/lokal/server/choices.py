"""One choice of a generation, read from engine events into what its client sees: content, tool calls and log
probabilities, streamed piece by piece or collected whole.

A model's tool calls arrive as its own markup in the text (`<tool_call>{...}</tool_call>` and the like); the
family's parser (lokal.toolcalls) turns them into calls and holds back text that may be the start of one, so
markup never reaches content. An upstream that parses calls itself (remote engines) sends them ready-made in
GenerationEvent.tool_calls, which pass through as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lokal.engines.base import GenerationEvent, TokenLogprob, ToolCall, ToolCallDelta, Usage
from lokal.errors import EngineError
from lokal.protocol.logprobs import text_offsets
from lokal.protocol.outputs import FinishReason
from lokal.toolcalls import ToolCallStream, parse_tool_calls

Piece = str | ToolCallDelta  # content text, or a piece of a tool call


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one request's tool calls are read. family None: the engine's upstream parses them itself."""

    family: str | None
    tools: Sequence[Mapping[str, Any]]
    parallel: bool = True


@dataclass(slots=True)
class Step:
    """What one event (or the end of the generation) adds to a choice, in order."""

    pieces: list[Piece] = field(default_factory=list)
    logprobs: tuple[TokenLogprob, ...] = ()
    offsets: list[int] = field(default_factory=list)  # completions: where each logprob's token starts


class ChoiceReader:
    """Events of one choice in, pieces out. `start`: characters before the generated text (the echoed prompt).
    `streaming`: parse tool calls as the text comes; otherwise whole() parses the collected text."""

    def __init__(self, index: int, plan: ToolPlan | None = None, start: int = 0, streaming: bool = True) -> None:
        self.index = index
        self.plan = plan
        self._parser: ToolCallStream | None = None
        if streaming and plan is not None and plan.family is not None:
            self._parser = ToolCallStream(plan.family, plan.tools, parallel=plan.parallel)
        self.last = GenerationEvent()
        self.called = False  # a tool call was made
        self._pos = start
        self._held: list[TokenLogprob] = []  # logprobs of text the parser holds back, sent with that text
        self._upstream_calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]

    @property
    def parses(self) -> bool:
        return self._parser is not None

    def advance(self, ev: GenerationEvent) -> None:
        """step() for an event that is only text, on a choice that parses nothing: the streaming hot path."""
        self.last = ev
        self._pos += len(ev.text)

    def step(self, ev: GenerationEvent) -> Step:
        self.last = ev
        step = Step()
        if ev.logprobs:
            step.offsets = text_offsets(self._pos, ev.logprobs)
        if self._parser is None:
            if ev.text:
                step.pieces.append(ev.text)
            step.logprobs = ev.logprobs
        else:
            self._held.extend(ev.logprobs)
            step.pieces = self._parser.feed(ev.text) if ev.text else []
            self._release(step)
        self._pos += len(ev.text)
        if ev.tool_calls:
            step.pieces.extend(ev.tool_calls)
            for d in ev.tool_calls:
                self._upstream_calls.setdefault(d.index, [d.id or "", d.name or ""]).append(d.arguments)
        self.called = self.called or any(isinstance(p, ToolCallDelta) for p in step.pieces)
        return step

    def close(self) -> Step:
        """The end of the generation: what the parser still held (an unfinished call comes out as text)."""
        step = Step()
        if self._parser is not None:
            step.pieces = self._parser.close()
            self._release(step, final=True)
            self.called = self.called or any(isinstance(p, ToolCallDelta) for p in step.pieces)
        return step

    def _release(self, step: Step, final: bool = False) -> None:
        if self._held and (final or any(isinstance(p, str) and p for p in step.pieces)):
            step.logprobs, self._held = tuple(self._held), []

    def check_complete(self) -> None:
        """A cancelled generation whose caller still listens (the worker's error was lost, or a new cancel
        path) must not pass for a finished answer."""
        if self.last.finish_reason == "cancelled":
            raise EngineError("the generation was cancelled before it finished", code="cancelled")

    @property
    def usage(self) -> Usage:
        return self.last.usage or Usage(0, 0)

    def finish_reason(self) -> FinishReason:
        reason = self.last.finish_reason
        if reason == "length":
            return "length"
        if self.called or reason == "tool_calls":
            return "tool_calls"
        return "stop"  # "cancelled" never gets here (check_complete); anything else unknown reads as a stop

    def whole(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """A collected answer's content and calls: parsed out of the text, or as the upstream sent them."""
        calls = [ToolCall(v[0], v[1], "".join(v[2:])) for _, v in sorted(self._upstream_calls.items())]
        if self.plan is not None and self.plan.family is not None:
            text, parsed = parse_tool_calls(self.plan.family, text, self.plan.tools, parallel=self.plan.parallel)
            calls += parsed
        self.called = bool(calls)
        return (text if text or not calls else None), calls


__all__ = ["ChoiceReader", "Piece", "Step", "ToolPlan"]
