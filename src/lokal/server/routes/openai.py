"""The OpenAI-compatible endpoints under /v1. Thin: parse, hand to serving, write the typed answer (streams
through protocol/sse.py, the one SSE encoder).

Every request runs under a disconnect watch: until its answer starts (while it waits in the queue, while the
engine reads its prompt and, for an answer sent whole, during all of its generation) a client that leaves
cancels it. Once a stream has started, Starlette's StreamingResponse watches instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from lokal.protocol import sse
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.completions import CompletionRequest
from lokal.protocol.embeddings import EmbeddingRequest
from lokal.protocol.outcome import Outcome
from lokal.protocol.outputs import ModelList
from lokal.runtime.services import Services
from lokal.server.body import parse_body
from lokal.server.deps import ServicesDep
from lokal.server.model_cards import model_card, model_cards

log = logging.getLogger("lokal.server")
router = APIRouter()
T = TypeVar("T")
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, but logs and metrics say what happened


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone: after parse_body read the body, the only message left on the ASGI
    receive channel is http.disconnect (listening there is immediate; polling is_disconnected() is not)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None when the client disconnected first. Then `work` is cancelled: the cancellation
    reaches the worker's event generator, which sets the job's cancel flag, so a queued job never runs and a
    running one stops at its next token or prompt chunk."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the handler itself is cancelled (the server is stopping)
        task.cancel()
        raise
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        if task.cancelled() or task.exception() is not None:
            return None
    elif not gone.done() or gone.cancelled():
        return task.result()  # raises the work's error, which the app's handler answers
    await _discard(task.result())  # finished as the client left: a primed stream must still be closed
    return None


async def _discard(result: object) -> None:
    outcome = result[0] if isinstance(result, tuple) else result
    if isinstance(outcome, Outcome) and outcome.stream is not None:
        await outcome.stream.aclose()


async def answer_chat(services: Services, body: ChatCompletionRequest) -> tuple[Outcome, dict[str, str]]:
    """The chat outcome from the virtual models that serve body.model (the router, with its headers saying
    what it chose), else from serving (no extra headers). A tuple, so that _unless_gone closes it when the
    client left meanwhile."""
    virtual = services.virtual(body.model)
    if virtual is not None:
        return await virtual.chat(body)
    return await services.serving.chat(body), {}


def _respond(outcome: Outcome, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"x-lokal-model": outcome.model_id, **(headers or {})}
    if outcome.stream is not None:
        return StreamingResponse(
            sse.encode(outcome.stream),
            media_type="text/event-stream",
            headers={**hdrs, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    assert outcome.body is not None
    return _json(outcome.body, hdrs)


def _json(body: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


@router.get("/v1/models")
async def list_models(services: ServicesDep, all: bool = False) -> Response:
    return _json(ModelList(data=model_cards(services, include_all=all)))


@router.get("/v1/models/{model_id:path}")
async def get_model(services: ServicesDep, model_id: str) -> Response:
    return _json(model_card(services, model_id))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, services: ServicesDep) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    answered = await _unless_gone(request, answer_chat(services, body))
    return Response(status_code=CLIENT_GONE) if answered is None else _respond(*answered)


@router.post("/v1/completions")
async def completions(request: Request, services: ServicesDep) -> Response:
    body = await parse_body(request, CompletionRequest)
    outcome = await _unless_gone(request, services.serving.completion(body))
    return Response(status_code=CLIENT_GONE) if outcome is None else _respond(outcome)


@router.post("/v1/embeddings")
async def embeddings(request: Request, services: ServicesDep) -> Response:
    body = await parse_body(request, EmbeddingRequest)
    result = await _unless_gone(request, services.serving.embeddings(body))
    if result is None:
        return Response(status_code=CLIENT_GONE)
    # Thousands of vectors take a while to serialise: off the event loop, like the work that made them.
    return await asyncio.to_thread(_json, result)
