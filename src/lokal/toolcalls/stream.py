"""Tool calls out of streamed model text, as OpenAI-style deltas.

One parser serves streaming and whole answers (parse_tool_calls feeds it everything at once), so a call reads
the same however the text was split. It is written as a generator that pulls characters from the text seen so
far and pauses when it needs more: each family's call syntax then reads top to bottom.

Rules, the same for every family:
- Text that may be the start of call markup (a proper prefix of a marker) is held until it is known.
- id and name go out as soon as the name is known; argument text goes out as it arrives, exactly as the model
  wrote it (for `{"name": ..., "arguments": {...}}` just the inner object's text), so the fragments of one
  index joined are that call's `arguments`.
- Markup that turns out not to be a call (no name could be read) is plain content, marker included.
- A call whose name went out stays a call: cut short (max_tokens), it keeps the arguments written so far, as
  OpenAI's own API does on finish_reason "length". A closing marker is optional, because engines trim stop
  strings (gpt-oss's `<|call|>`) and a call whose arguments are complete is complete.
- Whitespace next to a call is not content; with parallel=False calls after the first are read and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lokal.engines.base import ToolCall, ToolCallDelta
from lokal.toolcalls.harmony import HarmonyReader
from lokal.toolcalls.scan import WS, Fail, Pull, find_first, held, merged

# Call openers per family, and what follows each (its body). Closers are eaten wherever they appear.
OPENERS: dict[str, dict[str, str]] = {
    "hermes": {"<tool_call>": "object"},
    "llama3": {"<|python_tag|>": "sequence", '{"name"': "bare"},
    "mistral": {"[TOOL_CALLS]": "mistral"},
    "phi4": {"<|tool_call|>": "list_or_object", "functools": "list"},
}
CLOSERS: dict[str, tuple[str, ...]] = {
    "hermes": ("</tool_call>",),
    "llama3": ("<|eom_id|>", "<|eot_id|>"),
    "mistral": (),
    "phi4": ("<|/tool_call|>",),
}
NAME_KEYS = ("name",)
ARG_KEYS = ("arguments", "parameters")  # Llama 3 writes "parameters"


class ToolCallStream(HarmonyReader):
    """Incremental parser for one generation. feed() model text as it streams; returns what may be sent now:
    plain content strings and ToolCallDelta pieces (for each call index: first a delta with id ("call_" + 24 hex)
    and name, then argument text fragments). Text that might be the start of call markup is held back until it
    is known; markup itself never comes out as content."""

    def __init__(self, family: str, tools: Sequence[Mapping[str, Any]], *, parallel: bool = True) -> None:
        super().__init__(family, tools, parallel=parallel)
        self._machine = self._harmony() if family == "harmony" else self._text()
        self._done = False

    # -- public ------------------------------------------------------------------------------------------------
    def feed(self, text: str) -> list[str | ToolCallDelta]:
        if self._eof:
            raise RuntimeError("feed() after close()")
        self._buf += text
        return self._run()

    def close(self) -> list[str | ToolCallDelta]:
        """End of generation: flush held text. An unfinished call whose name was never read is plain text; one
        whose name went out is finished with the arguments read so far."""
        if self._eof:
            return []
        self._eof = True
        out = self._run()
        return out

    @property
    def calls(self) -> list[ToolCall]:
        """Complete calls so far (arguments = JSON text)."""
        done = [c for c in self._calls if c.shown and c is not self._current]
        return [ToolCall(id=c.id, name=c.name, arguments="".join(c.arguments)) for c in done]

    # -- driving -----------------------------------------------------------------------------------------------
    def _run(self) -> list[str | ToolCallDelta]:
        if not self._done:
            try:
                next(self._machine)
            except StopIteration:
                self._done = True
        out, self._out = merged(self._out), []
        return out

    def _text(self) -> Pull:
        openers = OPENERS[self.family]
        markers = (*openers, *CLOSERS[self.family])
        longest = max(len(m) for m in markers)
        while True:
            if self.family == "llama3" and not self._started and not self._calls:
                # Llama 3 writes a call as a bare JSON object when that is the whole answer.
                rest = self._buf[self._pos :]
                stripped = rest.lstrip(WS)
                if stripped.startswith("{"):
                    self._content(rest[: len(rest) - len(stripped)])
                    self._pos += len(rest) - len(stripped)
                    yield from self._body("sequence", self._pos, "", strict_names=True)
                    continue
                if not stripped and not self._eof:
                    self._content(rest)
                    self._pos = len(self._buf)
                    yield
                    continue
            hit, marker = find_first(self._buf, markers, self._pos)
            if marker is not None:
                self._content(self._buf[self._pos : hit])
                self._pos = hit + len(marker)
                if openers.get(marker) == "bare":  # the marker is the call's own start: read it again
                    self._pos = hit
                    yield from self._body("sequence", hit, marker, strict_names=True)
                elif marker in openers:
                    yield from self._body(openers[marker], hit, marker)
                continue
            if self._eof:
                self._content(self._buf[self._pos :])
                self._pos = len(self._buf)
                self._finish_content()
                return
            hold = held(self._buf, markers, max(self._pos, len(self._buf) - longest))
            self._content(self._buf[self._pos : hold])
            self._pos = hold
            yield

    def _body(self, kind: str, start: int, marker: str, *, strict_names: bool = False) -> Pull:
        """Read the call(s) after an opener; if not one name could be read, the text is content again."""
        ws_before, self._ws = self._ws, ""
        calls_before = len(self._calls)
        resume = start + len(marker) if marker else self._pos
        try:
            yield from self._body_kinds(kind, strict_names)
        except Fail:
            if len(self._calls) == calls_before:
                self._current = None
                self._pending = []
                self._ws = ws_before
                self._pos = resume
                self._content(self._buf[start:resume])
                self._started |= not marker  # a bare JSON object that was no call: read on as plain text
                return
            self._end(complete=False)  # a call was under way: it ends where the markup stopped making sense

    def _body_kinds(self, kind: str, strict_names: bool) -> Pull:
        c = yield from self._skip_ws()
        if kind == "object" or (kind == "list_or_object" and c == "{"):
            yield from self._object(strict_names)
        elif kind in ("list", "list_or_object") or (kind == "mistral" and c == "["):
            yield from self._list()
        elif kind == "mistral":
            yield from self._name_args()
        elif kind == "sequence":
            while True:
                yield from self._object(strict_names)
                c = yield from self._skip_ws()
                if c == ";":
                    self._pos += 1
                    c = yield from self._skip_ws()
                if c != "{":
                    return
        else:  # pragma: no cover - OPENERS names only the kinds above
            raise AssertionError(kind)

    def _list(self) -> Pull:
        yield from self._literal("[")
        c = yield from self._skip_ws()
        if c == "]":
            raise Fail  # an empty list calls nothing
        while True:
            yield from self._object(False)
            c = yield from self._skip_ws()
            if c == ",":
                self._pos += 1
                continue
            if c == "]":
                self._pos += 1
                return
            raise Fail

    def _name_args(self) -> Pull:
        """Mistral's newer form: `name[ARGS]{...}` (with an optional `[CALL_ID]id` after the name)."""
        start = self._pos
        while True:
            c = yield from self._peek()
            if c is None or not (c.isalnum() or c in "_-."):
                break
            self._pos += 1
        name = self._buf[start : self._pos]
        if not name:
            raise Fail
        if (yield from self._ahead("[CALL_ID]")):
            self._pos += len("[CALL_ID]")
            while (c := (yield from self._peek())) not in (None, "["):
                self._pos += 1
        yield from self._literal("[ARGS]")
        self._begin(name)
        yield from self._value(stream=True)
        self._end()

    def _object(self, strict_names: bool) -> Pull:
        """A call object {"name": ..., "arguments": ...}: the name goes out when read, the arguments stream."""
        c = yield from self._skip_ws()
        if c != "{":
            raise Fail
        self._pos += 1
        named = have_args = False
        first = True
        while True:
            c = yield from self._skip_ws()
            if c == "}" and first:
                raise Fail  # {} names nothing
            if c == "}":
                self._pos += 1
                break
            if not first:
                if c != ",":
                    raise Fail
                self._pos += 1
                c = yield from self._skip_ws()
            first = False
            if c != '"':
                raise Fail
            key = yield from self._string()
            if (yield from self._skip_ws()) != ":":
                raise Fail
            self._pos += 1
            c = yield from self._skip_ws()
            if key in NAME_KEYS and not named:
                if c != '"':
                    raise Fail
                name = yield from self._string()
                if not isinstance(name, str) or not name or (strict_names and name not in self._names):
                    raise Fail
                named = True
                self._begin(name)
            elif key in ARG_KEYS and not have_args:
                have_args = True
                yield from self._value(stream=True)
            else:
                yield from self._value(stream=False)
        if not named:
            raise Fail
        self._end()
