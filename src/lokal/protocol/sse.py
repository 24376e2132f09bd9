"""Server-sent events: the bytes of every streamed answer (chat, completions, Responses, Messages) come from here.

OpenAI-style streams are bare `data:` frames ending with `data: [DONE]`; the Responses and Anthropic Messages
streams name each frame with an `event:` line. A failure after the first byte, when the status line is long
gone, is one error frame in the stream's own shape. Comment frames (`: ...`) keep a connection alive through a
long prompt read: every SSE client ignores them.
"""

from __future__ import annotations

DONE = "data: [DONE]\n\n"


def data(payload: str) -> str:
    """One unnamed frame; `payload` is serialised JSON (one line)."""
    return f"data: {payload}\n\n"


def event(name: str, payload: str) -> str:
    """One named frame (Responses and Messages streams)."""
    return f"event: {name}\ndata: {payload}\n\n"


def comment(text: str = "keep-alive") -> str:
    return f": {text}\n\n"


__all__ = ["DONE", "comment", "data", "event"]
