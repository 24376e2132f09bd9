"""The one SSE encoder: frames, [DONE], the error frame after the first byte, keep-alive comments until the first
item, and the chunk iterator closed however the stream ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from lokal.errors import ContextLengthExceeded, LokalError
from lokal.protocol import sse
from lokal.protocol.outputs import Usage


def run(items: AsyncIterator[sse.Item], **kw: object) -> list[str]:
    async def main() -> list[str]:
        return [f async for f in sse.encode(items, **kw)]  # type: ignore[arg-type]

    return asyncio.run(main())


async def items_of(*items: sse.Item, delay: float = 0.0, fail: BaseException | None = None) -> AsyncIterator[sse.Item]:
    if delay:
        await asyncio.sleep(delay)
    for item in items:
        yield item
    if fail is not None:
        raise fail


def test_data_frames_then_done() -> None:
    frames = run(items_of('{"a":1}', Usage.of(1, 2)))
    assert frames == ['data: {"a":1}\n\n', 'data: {"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}\n\n',
                      "data: [DONE]\n\n"]


def test_named_events_without_done() -> None:
    frames = run(items_of(sse.Event("response.created", '{"x":1}'), sse.Event("usage", Usage.of(0, 0))), done=False)
    assert frames == ['event: response.created\ndata: {"x":1}\n\n',
                      'event: usage\ndata: {"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}\n\n']


def test_an_empty_stream_is_just_done() -> None:
    assert run(items_of()) == ["data: [DONE]\n\n"]


@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [(ContextLengthExceeded("too long"), "context_length_exceeded", "invalid_request_error"),
     (RuntimeError("boom"), "engine_error", "server_error")],
)
def test_a_failure_after_the_first_byte_is_one_openai_error_frame_and_no_done(
    error: Exception, code: str, kind: str
) -> None:
    frames = run(items_of('{"a":1}', fail=error))
    assert frames[0] == 'data: {"a":1}\n\n' and len(frames) == 2
    assert frames[1].startswith("data: ") and frames[1].endswith("\n\n")
    body = json.loads(frames[1][len("data: "):])
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["code"], body["error"]["type"]) == (code, kind)


def test_a_failure_before_the_first_item_is_an_error_frame_too() -> None:
    frames = run(items_of(delay=0.01, fail=ContextLengthExceeded("too long")), keepalive_s=0)
    assert len(frames) == 1 and json.loads(frames[0][6:])["error"]["message"] == "too long"


def test_named_streams_bring_their_own_error_frame() -> None:
    def anthropic_error(exc: LokalError) -> str:
        return sse.event("error", json.dumps({"type": "error", "error": {"message": exc.message}}))

    frames = run(items_of(sse.Event("ping", "{}"), fail=LokalError("gone")), done=False, error=anthropic_error)
    assert frames[-1] == 'event: error\ndata: {"type": "error", "error": {"message": "gone"}}\n\n'


def test_keep_alive_comments_until_the_first_item_only() -> None:
    async def slow() -> AsyncIterator[sse.Item]:
        await asyncio.sleep(0.35)
        yield "1"
        await asyncio.sleep(0.35)  # after the first item, silence is the engine's pace: no comments
        yield "2"

    frames = run(slow(), keepalive_s=0.1)
    first = frames.index("data: 1\n\n")
    assert first >= 2 and set(frames[:first]) == {": keep-alive\n\n"}
    assert frames[first:] == ["data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"]


def test_the_default_interval_is_the_module_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.05)
    assert run(items_of("1", delay=0.2))[0] == ": keep-alive\n\n"
    monkeypatch.setattr(sse, "KEEPALIVE_S", 10.0)
    assert run(items_of("1", delay=0.2)) == ["data: 1\n\n", "data: [DONE]\n\n"]


class Tracked:
    """A chunk iterator that records how it ended."""

    def __init__(self, first_delay: float) -> None:
        self.first_delay = first_delay
        self.ended: str | None = None

    async def gen(self) -> AsyncIterator[sse.Item]:
        try:
            await asyncio.sleep(self.first_delay)
            while True:
                yield "x"
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise
        except GeneratorExit:
            self.ended = "closed"
            raise


def test_a_consumer_that_stops_closes_the_chunk_iterator() -> None:
    tracked = Tracked(0)

    async def main() -> None:
        frames = sse.encode(tracked.gen())
        assert await anext(frames) == "data: x\n\n"
        await frames.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert tracked.ended == "closed"


def test_a_client_leaving_during_the_keep_alive_wait_stops_the_work() -> None:
    tracked = Tracked(30)

    async def main() -> None:
        frames = sse.encode(tracked.gen(), keepalive_s=0.05)

        async def read() -> None:
            async for _ in frames:
                pass

        task = asyncio.ensure_future(read())
        await asyncio.sleep(0.2)
        task.cancel()  # what Starlette does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert tracked.ended == "cancelled"
