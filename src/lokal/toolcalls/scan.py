"""The reading machinery under ToolCallStream: a buffer of the text so far, coroutines that pull characters
from it (pausing when they need more), JSON scanning, and the bookkeeping of content and calls.

Parsing coroutines are generators: `c = yield from self._peek()` returns the next character, or pauses the
whole parse until feed() brings more text (None once the text has ended). Each family's syntax is then
ordinary top-to-bottom code, and a parse never depends on where the text was split.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lokal.engines.base import ToolCallDelta
from lokal.toolcalls.families import FAMILIES, new_call_id, tool_names

Pull = Generator[None, None, Any]  # what the parsing coroutines are: they pause (yield) until more text comes

WS = " \t\r\n"
SCALAR = set("-+.0123456789eEtruefalsn")


class Fail(Exception):
    """The text is not the markup expected here."""


@dataclass(slots=True)
class Call:
    index: int
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    shown: bool = True  # False: dropped because parallel calls are off


class Scanner:
    """State and primitives shared by every family's reader."""

    def __init__(self, family: str, tools: Sequence[Mapping[str, Any]], *, parallel: bool = True) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown tool-call family {family!r}; known: {', '.join(FAMILIES)}")
        self.family = family
        self.parallel = parallel
        self._names = set(tool_names(tools))
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._out: list[str | ToolCallDelta] = []
        self._calls: list[Call] = []
        self._current: Call | None = None
        self._pending: list[str] = []  # argument text read before the name (a model that writes it first)
        self._ws = ""  # trailing whitespace of the content so far: dropped if a call follows
        self._after_call = False
        self._started = False  # content other than whitespace has gone out

    def _peek(self) -> Pull:
        """The next character, None at the end of the text."""
        while self._pos >= len(self._buf):
            if self._eof:
                return None
            yield
        return self._buf[self._pos]

    def _skip_ws(self) -> Pull:
        while True:
            c = yield from self._peek()
            if c is None or c not in WS:
                return c
            self._pos += 1

    def _ahead(self, text: str) -> Pull:
        """Whether `text` comes next (waits until the text seen so far decides it); consumes nothing."""
        while True:
            seen = self._buf[self._pos : self._pos + len(text)]
            if seen == text:
                return True
            if not text.startswith(seen) or self._eof:
                return False
            yield

    def _literal(self, text: str) -> Pull:
        """Consume `text` exactly, or fail (at the end of the text too)."""
        for ch in text:
            c = yield from self._peek()
            if c != ch:
                raise Fail
            self._pos += 1

    # -- content -----------------------------------------------------------------------------------------------
    def _content(self, text: str) -> None:
        if self._after_call:
            text = text.lstrip(WS)
            if not text:
                return
            self._after_call = False
        text = self._ws + text
        body = text.rstrip(WS)
        self._ws = text[len(body) :]
        if body:
            self._out.append(body)
            self._started = True

    def _finish_content(self) -> None:
        if self._ws and not self._calls:
            self._out.append(self._ws)
        self._ws = ""

    # -- calls -------------------------------------------------------------------------------------------------
    def _begin(self, name: str) -> None:
        shown = self.parallel or not any(c.shown for c in self._calls)
        call = Call(index=sum(c.shown for c in self._calls), id=new_call_id(), name=name, shown=shown)
        self._calls.append(call)
        self._current = call
        self._ws = ""
        if shown:
            self._out.append(ToolCallDelta(index=call.index, id=call.id, name=name))
        pending, self._pending = self._pending, []
        for piece in pending:
            self._arguments(piece)

    def _arguments(self, piece: str) -> None:
        call = self._current
        if not piece:
            return
        if call is None:
            self._pending.append(piece)
            return
        call.arguments.append(piece)
        if call.shown:
            self._out.append(ToolCallDelta(index=call.index, arguments=piece))

    def _end(self, *, complete: bool = True) -> None:
        call = self._current
        if complete and call is not None and not call.arguments and not self._pending:
            self._arguments("{}")  # a call with no arguments key: OpenAI always sends an object
        self._current = None
        self._pending = []
        self._after_call = True

    # -- JSON ----------------------------------------------------------------------------------------------------
    def _string(self) -> Pull:
        """A JSON string at the cursor, decoded."""
        start = self._pos
        self._pos += 1
        escaped = False
        while True:
            c = yield from self._peek()
            if c is None:
                raise Fail
            self._pos += 1
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                break
        try:
            return json.loads(self._buf[start : self._pos])
        except ValueError:
            raise Fail from None

    def _value(self, *, stream: bool) -> Pull:
        """Skip one JSON value; with `stream`, its text is the call's arguments, sent as it is read."""
        c = yield from self._peek()
        if c is None:
            raise Fail
        start = self._pos
        if c == '"':
            text = yield from self._string()
            if stream:  # arguments sent as a JSON-encoded string: the string is the arguments text
                self._arguments(text)
            return
        sent = start
        depth = 0
        in_string = escaped = False
        scalar = c not in "{["
        while True:
            c = yield from self._peek_flushing(stream, sent)
            if isinstance(c, int):  # paused: what was read so far went out
                sent = c
                continue
            if c is None:
                if stream:
                    self._arguments(self._buf[sent : self._pos])
                if scalar:
                    return
                raise Fail
            if scalar:
                if c not in SCALAR:
                    break
                self._pos += 1
                continue
            self._pos += 1
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    break
        if self._pos == start:
            raise Fail
        if stream:
            self._arguments(self._buf[sent : self._pos])

    def _peek_flushing(self, stream: bool, sent: int) -> Pull:
        """Like _peek, but before pausing sends the argument text read since `sent` (returns the new mark)."""
        if self._pos >= len(self._buf) and not self._eof:
            if stream and self._pos > sent:
                self._arguments(self._buf[sent : self._pos])
                return self._pos
            yield
            return (yield from self._peek())
        return (yield from self._peek())


def find_first(text: str, markers: Sequence[str], start: int) -> tuple[int, str | None]:
    best, found = len(text) + 1, None
    for m in markers:
        i = text.find(m, start)
        if i != -1 and (i < best or (i == best and found is not None and len(m) > len(found))):
            best, found = i, m
    return best, found


def held(text: str, markers: Sequence[str], start: int) -> int:
    """Where the longest tail of `text` (from `start` on) that could still grow into a marker begins."""
    for i in range(start, len(text)):
        tail = text[i:]
        if any(m.startswith(tail) for m in markers):
            return i
    return len(text)


def is_prefix(text: str, markers: Sequence[str]) -> bool:
    return any(m.startswith(text) for m in markers)


def merged(items: list[str | ToolCallDelta]) -> list[str | ToolCallDelta]:
    """Adjacent content strings, and adjacent argument pieces of one call, as one item each."""
    out: list[str | ToolCallDelta] = []
    for item in items:
        last = out[-1] if out else None
        if isinstance(item, str) and isinstance(last, str):
            out[-1] = last + item
        elif (
            isinstance(item, ToolCallDelta)
            and isinstance(last, ToolCallDelta)
            and item.id is None
            and last.index == item.index
        ):
            out[-1] = ToolCallDelta(
                index=last.index, id=last.id, name=last.name, arguments=last.arguments + item.arguments
            )
        else:
            out.append(item)
    return out
