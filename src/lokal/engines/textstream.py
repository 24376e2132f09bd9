"""Turns a stream of token bytes into text deltas, honouring UTF-8 boundaries and stop strings.

Shared by every token-level engine (single-stream and batched), so they agree on what a stop means.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


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

    def feed(self, data: bytes) -> str:
        if self.stopped:
            return ""
        pending = self._held + self._decoder.decode(data)
        return self._release(pending, final=False)

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
