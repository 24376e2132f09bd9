"""One info line per request, like llama-server's and Ollama's: method, path, model, status, tokens, ms.

An ASGI middleware that only watches: it tees the request body (to read "model") and the tail of the
response (where "usage" sits, in a JSON body or a stream's last chunk) without changing either. Bodies are
capped so a large upload or a long stream costs a bounded copy.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lokal.access")

REQUEST_CAP = 64 * 1024  # "model" is near the start of every OpenAI body
RESPONSE_TAIL = 8 * 1024  # a stream's usage chunk is its last data frame
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_OUTPUT = re.compile(rb'"output_tokens"\s*:\s*(\d+)')  # Anthropic and Responses usage
_MODEL = re.compile(rb'"model"\s*:\s*"([^"]{1,200})"')


def model_of(body: bytes) -> str | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        found = _MODEL.search(body)  # truncated at the cap: the field still names the model
        return found.group(1).decode("utf-8", "replace") if found else None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def tokens_of(tail: bytes) -> str:
    """'12+34' (prompt+completion) from the last usage in the response, '-' when there is none."""
    completion = _COMPLETION.findall(tail) or _OUTPUT.findall(tail)
    if not completion:
        return "-"
    prompt = _PROMPT.findall(tail)
    return f"{int(prompt[-1])}+{int(completion[-1])}" if prompt else str(int(completion[-1]))


class AccessLog:
    def __init__(self, app: ASGIApp, logger: logging.Logger = log) -> None:
        self.app = app
        self.log = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        request = bytearray()
        tail = bytearray()
        status = 0

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request) < REQUEST_CAP:
                request.extend(message.get("body", b"")[: REQUEST_CAP - len(request)])
            return message

        async def tee_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                tail.extend(message.get("body", b""))
                del tail[:-RESPONSE_TAIL]
            await send(message)

        try:
            await self.app(scope, tee_receive, tee_send)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            model = model_of(bytes(request)) if request else None
            path = scope.get("path", "")
            self.log.info(
                "%s %s model=%s status=%s tokens=%s %.0f ms",
                scope.get("method", "-"),
                path,
                model or "-",
                status or "-",
                tokens_of(bytes(tail)),
                ms,
            )
