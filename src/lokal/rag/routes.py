"""HTTP surface of RAG for `lokal serve` (the browser page uses it): list collections, search one.

Errors are raised as lokal errors; the app's handler renders them in OpenAI's error shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from lokal.embeddings import Encoder
from lokal.errors import InvalidRequest
from lokal.protocol.decode import load_json
from lokal.rag.gate import DEFAULT_MAX_CONTEXT_CHARS, DEFAULT_MIN_SCORE, apply_gate
from lokal.rag.index import DEFAULT_COLLECTION, collection_id, list_collections
from lokal.rag.retrieve import Mode, RetrieverCache


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = DEFAULT_COLLECTION
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Mode = "hybrid"
    filters: dict[str, str] | None = None
    # The relevance gate every front-end shares (lokal.rag.gate): the answer says what passed it.
    min_score: float = Field(default=DEFAULT_MIN_SCORE, ge=-1.0, le=1.0)
    max_context_chars: int = Field(default=DEFAULT_MAX_CONTEXT_CHARS, ge=100, le=200_000)


def _parse(body: Any) -> SearchRequest:
    try:
        return SearchRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ())) or None
        raise InvalidRequest(f"{param or 'body'}: {err.get('msg', 'invalid value')}", param=param) from exc


def create_router(home: Path | None = None, embedder: Encoder | None = None) -> APIRouter:
    """`home` and `embedder` default to LOKAL_HOME and the process-wide MiniLM, read when first needed."""
    api = APIRouter(tags=["rag"])
    cache = RetrieverCache(home, embedder)

    @api.get("/v1/rag/collections")
    async def collections() -> dict[str, Any]:
        infos = await run_in_threadpool(list_collections, cache.home)
        return {
            "object": "list",
            "data": [
                {k: v for k, v in info.to_dict().items() if k != "path"} | {"object": "rag.collection"}
                for info in infos
            ],
        }

    @api.post("/v1/rag/search")
    async def search(request: Request) -> dict[str, Any]:
        req = _parse(load_json(await request.body()))

        def run() -> dict[str, Any]:
            retriever = cache.get(req.collection)
            hits = retriever.search(req.query, k=req.k, mode=req.mode, filters=req.filters)
            gate = apply_gate(retriever.with_similarity(req.query, hits), req.min_score, req.max_context_chars)
            return {
                "object": "list",
                "collection": req.collection,
                "mode": req.mode,
                # Every hit, each with its cosine similarity (`dense`), whether or not it passed the gate.
                "data": [h.to_dict() for h in gate.hits],
                "gate": gate.to_dict(),
                # What a front-end may ground an answer on; empty together with `refusal` set when none.
                "context": [h.rank for h in gate.context],
                "refusal": gate.refusal(req.collection),
                # Lets `lokal rag` tell whether this server reads the same collection file it would.
                "collection_id": collection_id(retriever.path),
            }

        return await run_in_threadpool(run)

    return api


router = create_router()
