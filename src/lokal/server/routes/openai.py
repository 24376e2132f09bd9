"""The OpenAI-compatible endpoints under /v1. Thin: parse, hand to serving, frame the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

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


def _respond(outcome: Outcome, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"x-lokal-model": outcome.model_id, **(headers or {})}
    if outcome.stream is not None:
        # ping=None: no comment lines between tokens; some OpenAI clients choke on them.
        return EventSourceResponse(outcome.stream, headers=hdrs, ping=3600, sep="\n")
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
