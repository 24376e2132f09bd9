from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lokal.errors import LokalError
from lokal.rag.index import Index
from lokal.rag.ingest import ingest
from lokal.rag.routes import create_router
from lokal.rag.server import RagSearch
from tests.rag.helpers import Ingested, copy_collection
from tests.support.server import run_app


def _app(home: Path, embedder: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(create_router(home=home, embedder=embedder))

    @app.exception_handler(LokalError)
    async def lokal_error(_: Request, err: LokalError) -> JSONResponse:
        return JSONResponse(err.to_dict(), status_code=err.status_code)

    return app


@pytest.fixture
def api(ingested: Ingested, home: Path, embedder: Any) -> Iterator[httpx.Client]:
    copy_collection(ingested, home)
    with Index.open("empty", home, create=True):
        pass
    with run_app(_app(home, embedder)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_collections_are_listed(api: httpx.Client) -> None:
    r = api.get("/v1/rag/collections")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    by_name = {c["name"]: c for c in body["data"]}
    assert set(by_name) == {"docs", "empty"}
    assert by_name["docs"]["documents"] == 5 and by_name["docs"]["chunks"] > 5
    assert by_name["empty"]["chunks"] == 0 and "path" not in by_name["docs"]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_ranks_chunks(api: httpx.Client, mode: str) -> None:
    q = {
        "collection": "docs",
        "query": "Which oil should be used to lubricate the gearbox?",
        "k": 3,
        "mode": mode,
    }
    r = api.post("/v1/rag/search", json=q)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["collection"], body["mode"]) == ("docs", mode)
    top = body["data"][0]
    assert (
        top["source"].endswith("manual.pdf") and top["location"] == "page 2" and "ISO VG 320" in top["text"]
    )
    assert [h["rank"] for h in body["data"]] == list(range(1, len(body["data"]) + 1)) and len(
        body["data"]
    ) <= 3


def test_filters_pass_through(api: httpx.Client) -> None:
    body = {"collection": "docs", "query": "oil for the gearbox", "filters": {"kind": "csv"}}
    r = api.post("/v1/rag/search", json=body)
    assert r.status_code == 200 and {h["metadata"]["kind"] for h in r.json()["data"]} == {"csv"}


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"collection": "nope", "query": "x"}, 404, "collection_not_found", "collection"),
        ({"collection": "empty", "query": "x"}, 400, "collection_empty", "collection"),
        ({"collection": "../etc", "query": "x"}, 400, "invalid_collection_name", "collection"),
        ({"collection": "docs", "query": ""}, 400, None, "query"),
        ({"collection": "docs", "query": "x", "k": 0}, 400, None, "k"),
        ({"collection": "docs", "query": "x", "mode": "fuzzy"}, 400, None, "mode"),
        ({"collection": "docs", "query": "x", "top": 3}, 400, None, "top"),
    ],
)
def test_errors_have_the_openai_shape(
    api: httpx.Client, body: dict[str, Any], status: int, code: str | None, param: str
) -> None:
    r = api.post("/v1/rag/search", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == code and err["param"] == param
    assert err["message"]


def test_non_json_body_is_a_clear_400(api: httpx.Client) -> None:
    r = api.post("/v1/rag/search", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_a_new_ingest_is_seen_without_restart(
    api: httpx.Client, home: Path, tmp_path: Path, embedder: Any
) -> None:
    query = {"collection": "docs", "query": "What is the staging cluster called?", "k": 1}
    assert "Gondor" not in api.post("/v1/rag/search", json=query).json()["data"][0]["text"]
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "ops.md").write_text("# Ops\n\nThe staging cluster is called Gondor.\n")
    with Index.open("docs", home) as idx:
        ingest(idx, [extra], embedder=embedder)
    assert "Gondor" in api.post("/v1/rag/search", json=query).json()["data"][0]["text"]


def test_server_feature_mounts_the_routes(ingested: Ingested) -> None:
    app = FastAPI()
    RagSearch().install(app, SimpleNamespace(settings=SimpleNamespace(home=ingested.home)))  # type: ignore[arg-type]
    with run_app(app) as url:
        r = httpx.get(f"{url}/v1/rag/collections", timeout=10)
    assert r.status_code == 200 and [c["name"] for c in r.json()["data"]] == ["docs"]
