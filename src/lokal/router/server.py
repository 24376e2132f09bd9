"""Server feature: ``model="auto"`` (and router presets) in /v1/chat/completions.

The ``Routing`` feature (installed by ``create_app``) sets ``services.virtual_models`` to a hook the chat
routes consult. Requests run through the router's executor: local candidates through the server's own
serving path (the client's request with its model replaced, so metrics, queues, TTLs, tools, json_schema and
logprobs apply as for a direct request), remote ones over HTTP. Streams are relayed chunk by chunk from either.
Set ``LOKAL_ROUTER_WARM=1`` to load MiniLM at start-up instead of on the first request.
``GET /lokal/router`` reports the catalog source, reload errors, cache hits and models cooling down.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import FastAPI

from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.outcome import ManagedStream, Outcome
from lokal.protocol.sse import Item
from lokal.router.backends import EXTENSION_PARAMS, STRUCTURED_PARAMS, InProcessBackend
from lokal.router.executor import Executor, RoutedRequest, RoutedStream
from lokal.router.serving import ServedRouter
from lokal.runtime.services import Services


def request_of(body: ChatCompletionRequest) -> RoutedRequest:
    params: dict[str, Any] = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.requested_max_tokens,
        "stop": body.stop,
        "seed": body.seed,
    }
    sent = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    for key in (*STRUCTURED_PARAMS, *EXTENSION_PARAMS, "response_format", "presence_penalty", "frequency_penalty"):
        if key in sent:
            params[key] = sent[key]
    # The conversation as the client sent it (tool calls and tool results included) for a remote model.
    messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
    return RoutedRequest(messages, params, router=body.model, body=body, include_usage=body.include_usage)


async def _items(stream: RoutedStream) -> AsyncGenerator[Item, None]:
    async for d in stream:
        yield d.item


class RouterHook:
    """What the chat routes call for router model names (``Services.virtual_models``)."""

    def __init__(self, served: ServedRouter, executor: Executor) -> None:
        self.served = served
        self.executor = executor

    def handles(self, model: str) -> bool:
        return self.served.is_router_model(model)

    def names(self) -> list[str]:
        return self.served.names()

    async def chat(self, body: ChatCompletionRequest) -> tuple[Outcome, dict[str, str]]:
        req = request_of(body)
        if body.stream:
            stream = await self.executor.stream(req)
            managed = ManagedStream(_items(stream), stream.aclose)
            return Outcome(stream=managed, model_id=stream.model_id), stream.headers
        res = await self.executor.complete(req)
        return Outcome(body=res.completion, model_id=res.model_id), res.headers


class Routing:
    """The feature: router names in the chat routes and /v1/models, and GET /lokal/router."""

    name = "routing"

    def install(self, app: FastAPI, services: Services) -> None:
        def local_models() -> list[Any]:
            out = []
            for spec in services.catalog.specs():
                if spec.task == "chat-completion" and services.is_cached(services.catalog.best_variant(spec)):
                    out.append(spec)
            return out

        def loaded() -> set[str]:
            return {lm.spec.alias for lm in services.manager.loaded()}

        served = ServedRouter.from_home(services.settings.home, local_models, loaded)
        services.virtual_models = RouterHook(served, Executor(served.router, local=InProcessBackend(services.serving)))
        services.extras["router"] = served

        @app.get("/lokal/router")
        async def router_status() -> dict[str, Any]:
            return served.status()

        if services.settings.router_warm:
            threading.Thread(target=served.warm, name="router-warm", daemon=True).start()
