"""Turns a stream of token bytes into text deltas, honouring UTF-8 boundaries and stop strings.

Shared by every token-level engine (single-stream and batched), so they agree on what a stop means.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from lokal.engines.base import GenerationEvent, TokenLogprob, TopLogprob


class TextStream:
    """Feed token bytes; get back the text that is safe to emit.

    Text that could still become the start of a stop string is held back until it can't; when a stop string
    completes, the text before it is released and `stopped` turns true.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False
        self.text = ""  # everything emitted so far
        self.decoded = ""  # the characters the last feed completed (a token's own text)

    @property
    def position(self) -> int:
        """Characters decoded so far, emitted or held: where the next token's text starts."""
        return len(self.text) + len(self._held)

    def feed(self, data: bytes) -> str:
        if self.stopped:
            self.decoded = ""
            return ""
        self.decoded = self._decoder.decode(data)
        return self._release(self._held + self.decoded, final=False)

    def flush(self) -> str:
        if self.stopped:
            return ""
        pending = self._held + self._decoder.decode(b"", final=True)
        return self._release(pending, final=True)

    def _release(self, pending: str, final: bool) -> str:
        cut = len(pending)
        for s in self._stop:
            i = pending.find(s)
            if i != -1 and i < cut:
                cut = i
                self.stopped = True
        if self.stopped:
            out, self._held = pending[:cut], ""
        elif final or not self._stop:
            out, self._held = pending, ""
        else:
            keep = 0
            for s in self._stop:  # longest suffix of pending that is a proper prefix of a stop string
                for n in range(min(len(s) - 1, len(pending)), 0, -1):
                    if pending.endswith(s[:n]):
                        keep = max(keep, n)
                        break
            out, self._held = pending[: len(pending) - keep], pending[len(pending) - keep :]
        self.text += out
        return out


class TokenStream:
    """A TextStream that also carries each token's logprob, on the event whose text holds the token's start.

    Tokens whose text is held back (a possible stop string, an unfinished UTF-8 character) go out with the
    event that finally carries it; tokens inside a stop string are dropped with it; the flush carries the
    rest. So the events' logprobs are one per generated token that produced output text, in order."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.text = TextStream(stop)
        self._pending: list[tuple[int, TokenLogprob]] = []  # (start in the text, logprob), not yet sent

    @property
    def stopped(self) -> bool:
        return self.text.stopped

    def feed(
        self, data: bytes, logprob: float | None = None, top: tuple[TopLogprob, ...] = ()
    ) -> GenerationEvent | None:
        """The event for one token's bytes (None when nothing is released); `logprob` None: not asked for."""
        stream = self.text
        start = stream.position
        delta = stream.feed(data)
        if logprob is not None:
            self._pending.append((start, TokenLogprob(stream.decoded, logprob, tuple(data), top)))
        if not delta:
            if stream.stopped:
                self._pending.clear()
            return None
        return GenerationEvent(text=delta, logprobs=self._release())

    def flush(self) -> GenerationEvent | None:
        tail = self.text.flush()
        event = GenerationEvent(text=tail, logprobs=self._release()) if tail else None
        self._pending.clear()
        return event

    def _release(self) -> tuple[TokenLogprob, ...]:
        if not self._pending:
            return ()
        end = len(self.text.text)
        n = 0
        while n < len(self._pending) and self._pending[n][0] < end:
            n += 1
        out = tuple(lp for _, lp in self._pending[:n])
        del self._pending[:n]
        if self.text.stopped:
            self._pending.clear()
        return out
