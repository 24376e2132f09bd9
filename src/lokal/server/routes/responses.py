"""The OpenAI Responses API: POST /v1/responses; GET and DELETE /v1/responses/{id}; GET .../{id}/input_items.

A request becomes a chat completion (protocol/responses_api.py), served exactly as /v1/chat/completions serves
one (the router's names included, under the same disconnect watch), and the chunks that come back become the
response's output items, or its stream of Responses events (server/responses_adapter.py). With `store` (the
default) the response, its output and the conversation it read are kept in SQLite under LOKAL_HOME
(server/response_store.py): `previous_response_id` continues that conversation without the client sending it
again. Errors are OpenAI-shaped (the app's handler); a generation that fails after its stream began ends the
stream with a response.failed event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from lokal.errors import InvalidRequest, LokalError, NotFound
from lokal.protocol import sse
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.outcome import Outcome
from lokal.protocol.responses_api import ResponsesRequest, read_items
from lokal.protocol.responses_output import ItemList, ResponseDeleted, request_items
from lokal.protocol.responses_output import Response as ResponseObject
from lokal.runtime.services import Services
from lokal.server import chat_chunks
from lokal.server.body import parse_body
from lokal.server.deps import ServicesDep
from lokal.server.response_store import FILENAME, ResponseStore, StoredResponse
from lokal.server.responses_adapter import Builder
from lokal.server.routes.openai import CLIENT_GONE, _unless_gone, answer_chat

router = APIRouter()
PATH = "/v1/responses"
STORE_KEY = "response_store"  # Services.extras: the store, made on the first request that needs it
MAX_PAGE = 100


def _store(services: Services) -> ResponseStore:
    store = services.extras.get(STORE_KEY)
    if not isinstance(store, ResponseStore):
        store = services.extras[STORE_KEY] = ResponseStore(services.settings.home / FILENAME)
    return store


async def _stored(services: Services, rid: str, param: str | None = None) -> StoredResponse:
    found = await asyncio.to_thread(_store(services).get, rid)
    if found is None:
        what = "Previous response" if param == "previous_response_id" else "Response"
        raise NotFound(f"{what} with id {rid!r} not found.", param=param)
    return found


class _Answer:
    """One response in flight: the chat outcome it reads and the builder that turns it into items and events."""

    def __init__(
        self,
        services: Services,
        body: ResponsesRequest,
        chat: ChatCompletionRequest,
        conversation: list[dict[str, Any]],
    ) -> None:
        self.services, self.body, self.chat, self.conversation = services, body, chat, conversation
        self.builder = Builder(body, chat)
        self.outcome: Outcome | None = None
        self.headers: dict[str, str] = {}

    async def start(self) -> tuple[Outcome, dict[str, str]]:
        """The primed chat outcome (a tuple, so that _unless_gone closes it when the client left meanwhile)."""
        chat = self.chat
        self.outcome, self.headers = await answer_chat(self.services, chat)
        self.builder.model = self.outcome.model_id or chat.model
        return self.outcome, self.headers

    async def events(self) -> AsyncIterator[sse.Item]:
        """The stream's events; the chat stream is closed however this ends (the client left, a failure)."""
        b = self.builder
        try:
            try:
                async for chunk in self._chunks():
                    for ev in b.feed(chunk):
                        yield sse.Event(ev.type, ev)
            finally:
                await self.close()
        except LokalError as exc:
            failed = b.fail(exc)
            await self._save()
            for ev in failed:
                yield sse.Event(ev.type, ev)
            return
        done = b.end()
        await self._save()  # before response.completed: a client that retrieves it at once finds it
        for ev in done:
            yield sse.Event(ev.type, ev)

    def error_frame(self, exc: LokalError) -> str:
        ev = self.builder.error_event(exc)
        return sse.event(ev.type, ev.model_dump_json())

    async def whole(self) -> ResponseObject:
        try:
            await self.start()
            async for chunk in self._chunks():
                self.builder.feed(chunk)
        finally:
            await self.close()  # a client that left mid-answer: the engine stops
        self.builder.end()
        await self._save()
        return self.builder.response()

    async def close(self) -> None:
        await chat_chunks.close(self.outcome)

    def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        assert self.outcome is not None
        return chat_chunks.chunks(self.outcome)

    async def _save(self) -> None:
        if not self.body.store:
            return
        response = self.builder.response()
        stored = StoredResponse(
            id=response.id,
            created_at=time.time(),
            input=self.conversation,
            output=[item.model_dump(mode="json") for item in response.output],
            response=response.model_dump(mode="json"),
        )
        await asyncio.to_thread(_store(self.services).put, stored)


@router.post(PATH)
async def create_response(request: Request, services: ServicesDep) -> Response:
    body = await parse_body(request, ResponsesRequest)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        history = (await _stored(services, body.previous_response_id, "previous_response_id")).conversation
    conversation = history + [item.model_dump(mode="json") for item in request_items(body)]
    answer = _Answer(services, body, body.to_chat(read_items(conversation), stream=body.stream), conversation)
    if body.stream:
        started = await _unless_gone(request, answer.start())
        if started is None:
            return Response(status_code=CLIENT_GONE)
        return StreamingResponse(
            sse.encode(answer.events(), done=False, error=answer.error_frame),
            media_type="text/event-stream",
            headers={**_headers(answer), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(answer.close),  # a client gone before the first byte: still closed
        )
    response = await _unless_gone(request, answer.whole())
    if response is None:
        return Response(status_code=CLIENT_GONE)
    return Response(response.model_dump_json(), media_type="application/json", headers=_headers(answer))


def _headers(answer: _Answer) -> dict[str, str]:
    model_id = answer.outcome.model_id if answer.outcome is not None else ""
    return {"x-lokal-model": model_id, **answer.headers}


@router.get(PATH + "/{response_id}")
async def retrieve_response(services: ServicesDep, response_id: str, stream: bool = False) -> JSONResponse:
    if stream:
        raise InvalidRequest(
            "stream=true replays a background response, and lokal runs none; retrieve without stream",
            param="stream",
        )
    return JSONResponse((await _stored(services, response_id)).response)


@router.delete(PATH + "/{response_id}")
async def delete_response(services: ServicesDep, response_id: str) -> JSONResponse:
    if not await asyncio.to_thread(_store(services).delete, response_id):
        raise NotFound(f"Response with id {response_id!r} not found.")
    return JSONResponse(ResponseDeleted(id=response_id).model_dump(mode="json"))


@router.get(PATH + "/{response_id}/input_items")
async def list_input_items(
    services: ServicesDep,
    response_id: str,
    limit: int = Query(default=20, ge=1, le=MAX_PAGE),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JSONResponse:
    """The conversation the response read (earlier turns of a continued one included), newest first by default."""
    items = (await _stored(services, response_id)).input
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"after: response {response_id!r} has no input item {after!r}", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    listed = ItemList(
        data=page,
        first_id=page[0].get("id") if page else None,
        last_id=page[-1].get("id") if page else None,
        has_more=len(items) > limit,
    )
    return JSONResponse(listed.model_dump(mode="json"))


__all__ = ["router"]
