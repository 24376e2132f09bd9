"""What serving a chat or text completion yields: a whole answer, or a stream of chunks with a cleanup.

Neutral ground between the server (which writes it to the wire) and the router (which makes one from an
upstream's answer), so neither imports the other."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from lokal.protocol import outputs as out
from lokal.protocol.sse import Item


class ManagedStream:
    """Outcome.stream: the chunks, and a cleanup that runs once however the stream ends, even if it was
    never iterated (a client that left just as the answer was ready)."""

    __slots__ = ("_cleanup", "_done", "_gen")

    def __init__(self, gen: AsyncGenerator[Item, None], cleanup: Callable[[], Awaitable[None]]) -> None:
        self._gen = gen
        self._cleanup = cleanup
        self._done = False

    def __aiter__(self) -> ManagedStream:
        return self

    def __anext__(self) -> Awaitable[Item]:
        return self._gen.__anext__()

    async def finish(self) -> None:
        if not self._done:
            self._done = True
            await self._cleanup()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()
        finally:
            await self.finish()


@dataclass(slots=True)
class Outcome:
    """A whole answer (body), or a stream of chunks (serialised JSON or typed, without the final [DONE]);
    lokal.protocol.common.as_dict reads either as the dicts a client would get."""

    body: out.ChatCompletion | out.Completion | None = None
    stream: ManagedStream | None = None
    model_id: str = ""
