"""The OpenAI-compatible endpoints under /v1. Thin: parse, hand to serving, frame the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.completions import CompletionRequest
from lokal.protocol.embeddings import EmbeddingRequest
from lokal.server.body import parse_body
from lokal.server.serving import Outcome
from lokal.server.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lokal
    return state


async def _sse_frames(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """SSE framing of serialised chunks. Plain StreamingResponse rather than sse-starlette's EventSourceResponse:
    the latter's ping/sender task group added ~10 ms to the first token (measured); Starlette still cancels this
    generator when the client disconnects, which stops the engine at its next token."""
    try:
        async for data in events:
            yield f"data: {data}\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _respond(outcome: Outcome, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"x-lokal-model": outcome.model_id, **(headers or {})}
    if outcome.stream is not None:
        return StreamingResponse(
            _sse_frames(outcome.stream),
            media_type="text/event-stream",
            headers={**hdrs, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(outcome.body, headers=hdrs)


@router.get("/v1/models")
async def list_models(request: Request, all: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": _state(request).model_cards(include_all=all)}


@router.get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    return _state(request).model_card(model_id)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    state = _state(request)
    body = await parse_body(request, ChatCompletionRequest)
    if state.router is not None and state.router.handles(body.model):
        outcome, headers = await state.router.chat(body)
        return _respond(outcome, headers)
    return _respond(await state.serving.chat(body))


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    body = await parse_body(request, CompletionRequest)
    return _respond(await _state(request).serving.completion(body))


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    body = await parse_body(request, EmbeddingRequest)
    return JSONResponse(await _state(request).serving.embeddings(body))
