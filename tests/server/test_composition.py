"""create_app(settings, features=[...]): the default list is the whole server, each feature owns its routes, an
optional feature whose import fails is left out, and router/RAG/web reach the server only through Services.

In process over httpx.ASGITransport (the app's lifespan run by hand): no engine, no port, no subprocess.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from lokal.config import Settings
from lokal.foundry.routes import FoundryApi
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.outcome import Outcome
from lokal.protocol.outputs import ChatChoice, ChatCompletion, ChatMessage, Usage
from lokal.rag.server import RagSearch
from lokal.router.server import Routing
from lokal.runtime.services import Feature, Services
from lokal.server import features as features_module
from lokal.server.app import build_services, create_app
from lokal.server.features import (
    Admin,
    MessagesApi,
    MetricsEndpoint,
    OpenAIApi,
    ResponsesApi,
    default_features,
    optional,
)
from lokal.web.routes import Playground
from tests.support.echo import asgi_client

Route = tuple[str, tuple[str, ...]]


def full_list() -> list[Feature]:
    return [
        OpenAIApi(),
        MessagesApi(),
        ResponsesApi(),
        Admin(),
        MetricsEndpoint(),
        FoundryApi(),
        RagSearch(),
        Routing(),
        Playground(),
    ]


NAMES = [f.name for f in full_list()]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", offline=True)


def _walk(routes: Iterable[Any]) -> Iterator[Route]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps an included router as one entry
        if included is not None:
            yield from _walk(included.routes)
        else:
            yield route.path, tuple(sorted(getattr(route, "methods", None) or ()))


def routes(app: FastAPI) -> list[Route]:
    return list(_walk(app.router.routes))


def own_routes(settings: Settings, feature: Feature) -> set[Route]:
    """What installing `feature` alone adds to a bare app (FastAPI's own /docs and /openapi.json are in every one)."""
    return set(routes(create_app(settings, [feature]))) - set(routes(create_app(settings, [])))


def test_the_default_list_is_every_feature_in_route_order(settings: Settings) -> None:
    assert [f.name for f in default_features()] == NAMES
    assert routes(create_app(settings)) == routes(create_app(settings, full_list()))


@pytest.mark.parametrize("name", NAMES)
def test_each_feature_owns_its_routes_and_leaving_it_out_removes_them(settings: Settings, name: str) -> None:
    full = set(routes(create_app(settings)))
    feature = next(f for f in full_list() if f.name == name)
    own = own_routes(settings, feature)
    assert own and own <= full
    without = set(routes(create_app(settings, [f for f in full_list() if f.name != name])))
    assert without == full - own


def test_features_share_no_route(settings: Settings) -> None:
    owned = [own_routes(settings, f) for f in full_list()]
    assert sum(len(o) for o in owned) == len(set().union(*owned))


async def _statuses(app: FastAPI, paths: Sequence[str]) -> dict[str, int]:
    async with asgi_client(app) as c:
        return {p: (await c.get(p)).status_code for p in paths}


PROBES = {  # one GET per feature that answers without a model
    "/v1/models": "openai",
    "/health": "admin",
    "/metrics": "metrics",
    "/foundry/list": "foundry",
    "/v1/rag/collections": "rag",
    "/lokal/router": "routing",
    "/": "playground",
}


def test_a_server_of_some_features_answers_only_their_routes(settings: Settings) -> None:
    chosen: list[Feature] = [OpenAIApi(), Admin()]
    got = asyncio.run(_statuses(create_app(settings, chosen), list(PROBES)))
    names = {f.name for f in chosen}
    assert got == {path: 200 if PROBES[path] in names else 404 for path in PROBES}


def test_the_default_server_answers_every_probe(settings: Settings) -> None:
    got = asyncio.run(_statuses(create_app(settings), list(PROBES)))
    assert got == dict.fromkeys(PROBES, 200)


def test_routing_adds_its_names_through_services(settings: Settings) -> None:
    async def model_ids(app: FastAPI) -> list[str]:
        async with asgi_client(app) as c:
            return [m["id"] for m in (await c.get("/v1/models")).json()["data"]]

    services = build_services(settings)
    app = create_app(settings, [OpenAIApi(), Routing()], services=services)
    assert app.state.lokal is services and services.virtual_models is not None
    assert "auto" in asyncio.run(model_ids(app))
    assert "auto" not in asyncio.run(model_ids(create_app(settings, [OpenAIApi()])))


class _Echo:
    """Virtual models that claim one name and answer it whole, as the router would."""

    def handles(self, model: str) -> bool:
        return model == "echo"

    def names(self) -> list[str]:
        return ["echo"]

    async def chat(self, body: ChatCompletionRequest) -> tuple[Outcome, dict[str, str]]:
        message = ChatMessage(content=body.messages[-1].text())
        choice = ChatChoice(index=0, message=message, finish_reason="stop")
        answer = ChatCompletion(id="chatcmpl-echo", created=0, model="echo", choices=[choice], usage=Usage.of(1, 1))
        return Outcome(body=answer, model_id="echo"), {"x-lokal-route": "echo"}


class _EchoFeature:
    name = "echo"

    def install(self, app: FastAPI, services: Services) -> None:
        services.virtual_models = _Echo()


def test_the_chat_routes_hand_a_virtual_model_name_to_the_feature_that_claims_it(settings: Settings) -> None:
    async def ask(app: FastAPI, model: str) -> httpx.Response:
        async with asgi_client(app) as c:
            body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 2}
            return await c.post("/v1/chat/completions", json=body)

    plain = asyncio.run(ask(create_app(settings, [OpenAIApi()]), "echo"))
    assert (plain.status_code, plain.json()["error"]["code"]) == (404, "model_not_found")
    echoed = asyncio.run(ask(create_app(settings, [OpenAIApi(), _EchoFeature()]), "echo"))
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["choices"][0]["message"]["content"] == "hi there"
    assert (echoed.headers["x-lokal-model"], echoed.headers["x-lokal-route"]) == ("echo", "echo")


def test_an_optional_feature_missing_an_extra_is_left_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def needs_bm25s() -> Feature:
        raise ModuleNotFoundError("No module named 'bm25s'", name="bm25s")

    optional_list = [(m, needs_bm25s if m == "lokal.rag.server" else load) for m, load in features_module.OPTIONAL]
    monkeypatch.setattr(features_module, "OPTIONAL", tuple(optional_list))
    with caplog.at_level(logging.INFO, logger="lokal.server"):
        app = create_app(settings)
    assert [f.name for f in default_features()] == [n for n in NAMES if n != "rag"]
    assert not [p for p, _ in routes(app) if p.startswith("/v1/rag")]
    assert "feature lokal.rag.server needs an extra that is not installed (bm25s)" in caplog.messages


def test_an_optional_feature_whose_module_is_absent_is_left_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lokal.web.routes", None)  # as if the package were built without web/
    assert [f.name for f in default_features()] == [n for n in NAMES if n != "playground"]


def test_any_other_import_error_is_a_bug_and_raises() -> None:
    def broken() -> Feature:
        raise ModuleNotFoundError("No module named 'numpyy'", name="numpyy")

    with pytest.raises(ModuleNotFoundError):
        optional("lokal.rag.server", broken)
