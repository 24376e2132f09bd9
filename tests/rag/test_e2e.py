"""Against a real `lokal serve` (fixture `lokal_server`, model "tiny": random weights, its text is noise)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from lokal.rag.answer import Answer, ask, make_client, parse_citations
from lokal.rag.index import Index
from lokal.rag.ingest import ingest
from lokal.rag.retrieve import Retriever


def test_grounded_answer_and_rag_routes_through_the_real_server(
    lokal_server: Any, corpus: Path, embedder: Any
) -> None:
    with Index.open("e2e", lokal_server.home, create=True) as idx:
        ingest(idx, [corpus], embedder=embedder, max_chars=200)
        retriever = Retriever(idx, embedder)
        tokens: list[str] = []

        async def main() -> Answer:
            client = make_client(lokal_server.base_url)
            try:
                return await ask(
                    retriever,
                    "How often must the turbine be inspected?",
                    client=client,
                    model="tiny",
                    k=2,
                    max_context_chars=400,  # the tiny model's context is small
                    max_tokens=16,
                    temperature=0.0,
                    on_token=tokens.append,
                )
            finally:
                await client.close()

        answer = asyncio.run(main())

    assert not answer.refused and answer.model == "tiny"
    assert answer.sources[0].name == "manual.pdf" and answer.sources[0].location == "page 1"
    assert tokens and "".join(tokens) == answer.text  # streamed from the real engine
    assert answer.cited == parse_citations(
        answer.text, len(answer.sources)
    )  # noise: whatever it cites is valid
    assert all(1 <= n <= len(answer.sources) for n in answer.cited)
    ps = httpx.get(f"{lokal_server.url}/lokal/ps", timeout=10).json()
    assert "tiny" in {m["alias"] for m in ps["models"]}  # the answer really came from the loaded model

    # the server mounts /v1/rag: the playground can list and search the same collection
    listed = httpx.get(f"{lokal_server.base_url}/rag/collections", timeout=30)
    assert listed.status_code == 200 and "e2e" in {c["name"] for c in listed.json()["data"]}
    found = httpx.post(
        f"{lokal_server.base_url}/rag/search",
        json={"collection": "e2e", "query": "Which oil for the gearbox?", "k": 2, "mode": "hybrid"},
        timeout=60,
    )
    assert found.status_code == 200 and found.json()["data"][0]["location"] == "page 2"
    missing = httpx.post(
        f"{lokal_server.base_url}/rag/search", json={"collection": "nope", "query": "x"}, timeout=30
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "collection_not_found"
