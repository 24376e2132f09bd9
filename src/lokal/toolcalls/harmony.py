"""Reading OpenAI's harmony format (gpt-oss): messages on channels, calls as commentary messages to functions.

An answer is a run of messages, `<|channel|>NAME[ to=RECIPIENT][ <|constrain|>json]<|message|>BODY` each
ended by <|end|>, <|call|> or <|return|> and the next opened by <|start|>assistant. A message to
`functions.NAME` is a call with BODY as its arguments; the final channel (and commentary addressed to no one,
gpt-oss's preambles) is content; the analysis channel is the model's reasoning and is not shown.
"""

from __future__ import annotations

import re

from lokal.toolcalls.scan import Pull, Scanner, find_first, held, is_prefix

HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>", "<|start|>", "<|channel|>")
HARMONY_HEADS = ("<|channel|>", " to=", "<|constrain|>")


class HarmonyReader(Scanner):
    def _harmony(self) -> Pull:
        # The generation prompt ends with "<|start|>assistant", so the answer opens with a header (or with
        # plain text from a model that ignores the format: that is content).
        c = yield from self._peek()
        while c is not None and is_prefix(self._buf[self._pos :], HARMONY_HEADS) and not self._eof:
            if any(self._buf.startswith(h, self._pos) for h in HARMONY_HEADS):
                break
            yield
            c = yield from self._peek()
        header = any(self._buf.startswith(h, self._pos) for h in HARMONY_HEADS)
        kind = "header" if header else "content"
        while True:
            if kind == "header":
                kind = yield from self._harmony_header()
                if kind == "eof":
                    return
            ender = yield from self._harmony_body(kind)
            if self._current is not None:
                self._end()
            if ender is None:
                self._finish_content()
                return
            kind = "header" if ender in ("<|start|>", "<|channel|>") else "content"

    def _harmony_header(self) -> Pull:
        """Read up to <|message|>; what the message is: a call (its name goes out), content or dropped."""
        start = self._pos
        while True:
            hit, marker = find_first(self._buf, ("<|message|>", "<|end|>", "<|return|>", "<|call|>"), start)
            if marker is not None:
                break
            if self._eof:
                self._pos = len(self._buf)
                self._finish_content()
                return "eof"  # cut short inside a header: markup, not content
            yield
        header = self._buf[start:hit]
        self._pos = hit + len(marker)
        if marker != "<|message|>":
            return "drop"
        recipient = re.search(r"to=([^\s<]+)", header)
        channel = re.search(r"<\|channel\|>\s*(\w+)", header)
        if recipient:
            name = recipient.group(1)
            self._begin(name.removeprefix("functions."))
            return "call"
        return "drop" if channel and channel.group(1) == "analysis" else "content"

    def _harmony_body(self, kind: str) -> Pull:
        """Stream a message body until its end marker; returns that marker (None at the end of the text)."""
        longest = max(len(m) for m in HARMONY_ENDS)
        while True:
            hit, marker = find_first(self._buf, HARMONY_ENDS, self._pos)
            if marker is not None:
                self._harmony_text(kind, self._buf[self._pos : hit])
                # <|channel|> opens the next header, which reads it; the other markers are spent here
                self._pos = hit if marker == "<|channel|>" else hit + len(marker)
                return marker
            end = (
                len(self._buf) if self._eof else held(self._buf, HARMONY_ENDS, max(self._pos, len(self._buf) - longest))
            )
            self._harmony_text(kind, self._buf[self._pos : end])
            self._pos = end
            if self._eof:
                return None
            yield

    def _harmony_text(self, kind: str, text: str) -> None:
        if kind == "call":
            self._arguments(text)
        elif kind == "content" and text:
            self._out.append(text)
            self._started = True
