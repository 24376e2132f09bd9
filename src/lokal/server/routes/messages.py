"""The Anthropic Messages API: POST /v1/messages and /v1/messages/count_tokens, over lokal's chat serving.

The request becomes a chat completion (protocol/messages.py), served exactly as /v1/chat/completions serves
one (the router's names included, under the same disconnect watch), and the chunks that come back become
Messages events (server/messages_adapter.py). Every error on these routes is Anthropic-shaped,
`{"type": "error", "error": {"type", "message"}}`, so Anthropic's SDKs raise their own exception classes; a
failure after the stream began is one `error` event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from lokal.errors import EngineError, InvalidRequest, LokalError
from lokal.protocol import sse
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.messages import CountTokensRequest, CountTokensResponse, ErrorBody, Message, MessagesRequest
from lokal.protocol.outcome import Outcome
from lokal.runtime.services import Services
from lokal.server import chat_chunks
from lokal.server.body import parse_body
from lokal.server.deps import ServicesDep
from lokal.server.front_door import error_response
from lokal.server.messages_adapter import Translator
from lokal.server.routes.openai import CLIENT_GONE, _unless_gone, answer_chat
from lokal.server.token_count import prompt_and_text_tokens, prompt_tokens

log = logging.getLogger("lokal.server")
router = APIRouter()
PATH = "/v1/messages"
CHARS_PER_TOKEN = 4  # the estimate for a model with no local tokenizer (an upstream), as engines/remote.py has


def error_event(exc: LokalError) -> str:
    return sse.event("error", ErrorBody.of(exc).model_dump_json())


class _Answer:
    """One Messages answer in flight: the chat outcome it reads and the translator that turns it into events."""

    def __init__(self, services: Services, body: MessagesRequest, chat: ChatCompletionRequest) -> None:
        self.services, self.body, self.chat = services, body, chat
        self.outcome: Outcome | None = None
        self.headers: dict[str, str] = {}
        self.translator: Translator | None = None

    async def start(self) -> tuple[Outcome, dict[str, str]]:
        """The primed chat outcome (a tuple, so that _unless_gone closes it when the client left meanwhile)."""
        chat = self.chat
        self.outcome, self.headers = await answer_chat(self.services, chat)
        self.translator = Translator(self.outcome.model_id or chat.model, self.body.stop_sequences or ())
        return self.outcome, self.headers

    async def events(self) -> AsyncIterator[sse.Item]:
        """The stream's events; the chunk stream is closed however this ends (the client left, a stop)."""
        assert self.outcome is not None and self.translator is not None
        tr = self.translator
        try:
            for ev in tr.start():
                yield sse.Event(ev.type, ev)
            async for chunk in self._chunks():
                for ev in tr.feed(chunk):
                    yield sse.Event(ev.type, ev)
                if tr.stopped:
                    break
        finally:
            await self.close()
        if tr.stopped:
            await self._recount()
        for ev in tr.end():
            yield sse.Event(ev.type, ev)

    async def whole(self) -> Message:
        async for _ in self.events():
            pass
        assert self.translator is not None
        return self.translator.message()

    async def close(self) -> None:
        await chat_chunks.close(self.outcome)

    def _chunks(self) -> AsyncIterator[dict[str, object]]:
        assert self.outcome is not None
        return chat_chunks.chunks(self.outcome)

    async def _recount(self) -> None:
        """A stop sequence cut the stream before its usage chunk: count with the model's tokenizer instead."""
        assert self.translator is not None and self.outcome is not None
        tr = self.translator
        text = "".join(tr.generated)
        counted = self.chat.model_copy(update={"model": self.outcome.model_id or self.chat.model})
        try:
            tr.input_tokens, tr.output_tokens = await prompt_and_text_tokens(self.services.manager, counted, text)
        except LokalError:  # answered by an upstream the router reached: no local tokenizer to ask
            log.debug("no local tokenizer for %s; estimating its usage", counted.model)
            prompt = sum(len(m.text()) for m in self.chat.messages)
            tr.input_tokens = max(1, prompt // CHARS_PER_TOKEN)
            tr.output_tokens = max(1, len(text) // CHARS_PER_TOKEN)


def _anthropic_error(exc: LokalError) -> JSONResponse:
    return error_response(exc, PATH)


@router.post(PATH)
async def create_message(request: Request, services: ServicesDep) -> Response:
    try:
        body = await parse_body(request, MessagesRequest)
        answer = _Answer(services, body, body.to_chat_stream())
        if body.stream:
            started = await _unless_gone(request, answer.start())
            if started is None:
                return Response(status_code=CLIENT_GONE)
            return StreamingResponse(
                sse.encode(answer.events(), done=False, error=error_event),
                media_type="text/event-stream",
                headers={**_headers(answer), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                background=BackgroundTask(answer.close),  # a client gone before the first byte: still closed
            )
        message = await _unless_gone(request, _whole(answer))
        if message is None:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(message.model_dump(mode="json"), headers=_headers(answer))
    except LokalError as exc:
        return _anthropic_error(exc)
    except Exception as exc:
        log.exception("%s failed", PATH)
        return _anthropic_error(EngineError(f"internal error: {type(exc).__name__}: {exc}"))


async def _whole(answer: _Answer) -> Message:
    try:
        await answer.start()
        return await answer.whole()
    finally:
        await answer.close()  # a client that left mid-answer: the engine stops


def _headers(answer: _Answer) -> dict[str, str]:
    model_id = answer.outcome.model_id if answer.outcome is not None else ""
    return {"x-lokal-model": model_id, **answer.headers}


@router.post(PATH + "/count_tokens")
async def count_tokens(request: Request, services: ServicesDep) -> Response:
    try:
        body = await parse_body(request, CountTokensRequest)
        chat = body.to_chat()
        if services.virtual(chat.model) is not None:
            raise _router_count(chat.model)
        counted = await _unless_gone(request, prompt_tokens(services.manager, chat))
        if counted is None:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(CountTokensResponse(input_tokens=counted).model_dump())
    except LokalError as exc:
        return _anthropic_error(exc)
    except Exception as exc:
        log.exception("%s/count_tokens failed", PATH)
        return _anthropic_error(EngineError(f"internal error: {type(exc).__name__}: {exc}"))


def _router_count(name: str) -> LokalError:
    return InvalidRequest(
        f"{name!r} is a router name: the model that would answer (and so its tokenizer) is chosen per request; "
        "count tokens for a model alias",
        param="model",
    )


__all__ = ["router"]
