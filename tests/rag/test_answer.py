from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from lokal.errors import UpstreamError
from lokal.rag.answer import (
    SYSTEM_PROMPT,
    Answer,
    ask,
    make_client,
    parse_citations,
    select_context,
    split_answer_sentences,
)
from lokal.rag.index import Index
from lokal.rag.retrieve import Hit, Retriever
from tests.rag.helpers import FakeOpenAI, Ingested
from tests.support.server import free_port


@pytest.fixture(scope="module")
def retriever(ingested: Ingested, embedder: Any) -> Iterator[Retriever]:
    with Index.open(ingested.collection, ingested.home) as idx:
        yield Retriever(idx, embedder)


def _ask(retriever: Retriever, question: str, base_url: str, **kw: Any) -> tuple[Answer, list[str]]:
    tokens: list[str] = []

    async def main() -> Answer:
        client = make_client(base_url)
        try:
            return await ask(retriever, question, client=client, on_token=tokens.append, **kw)
        finally:
            await client.close()

    return asyncio.run(main()), tokens


def test_grounded_answer_streams_and_cites_its_source(retriever: Retriever, fake_openai: FakeOpenAI) -> None:
    answer, tokens = _ask(retriever, "How often must the turbine be inspected?", fake_openai.base_url)
    assert not answer.refused
    assert answer.model == "fake-chat"  # the endpoint's first chat model; the embedder is not offered
    assert len(tokens) > 3 and "".join(tokens) == answer.text  # streamed token by token
    assert "400 operating hours" in answer.text
    assert answer.cited == [1]
    (cited,) = answer.cited_sources
    assert (cited.name, cited.location) == ("manual.pdf", "page 1")

    (request,) = fake_openai.requests
    assert request["stream"] is True and request["model"] == "fake-chat"
    system, user = request["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "insufficient" in SYSTEM_PROMPT and "only" in SYSTEM_PROMPT
    assert user["content"].startswith("Context:\n\n[1] manual.pdf, page 1\n")
    assert (
        user["content"]
        .rstrip()
        .endswith("Question: How often must the turbine be inspected?\nAnswer (cite passages like [1]):")
    )


def test_irrelevant_question_is_refused_without_calling_the_model(
    retriever: Retriever, fake_openai: FakeOpenAI
) -> None:
    answer, tokens = _ask(retriever, "What is the capital of France?", fake_openai.base_url)
    assert answer.refused and answer.sources == [] and tokens == []
    assert "nothing relevant" in answer.text and "docs" in answer.text
    assert fake_openai.requests == []
    # the same question passes the gate when the threshold allows anything
    loose, _ = _ask(retriever, "What is the capital of France?", fake_openai.base_url, min_score=-1.0)
    assert not loose.refused and len(fake_openai.requests) == 1


def test_context_respects_k_mode_and_budget(retriever: Retriever, fake_openai: FakeOpenAI) -> None:
    answer, _ = _ask(
        retriever,
        "Which port does the server listen on by default?",
        fake_openai.base_url,
        k=2,
        mode="bm25",
        model="chosen-model",
        max_tokens=7,
        min_score=0.0,
    )
    assert 1 <= len(answer.sources) <= 2 and all(h.dense is not None for h in answer.sources)
    request = fake_openai.requests[0]
    assert (request["model"], request["max_tokens"]) == ("chosen-model", 7)
    hits = [Hit(i, i, "f", "l", "x" * 400, (), 1.0, dense=0.9) for i in range(1, 6)]
    assert len(select_context(hits, 0.5, 1000)) == 2  # budget: 2 x 400 chars fit in 1000
    assert len(select_context(hits, 0.95, 1000)) == 0  # none similar enough


def test_citation_parsing() -> None:
    assert parse_citations("A [2]. B [1, 3][2]. C [9] [0] [x].", 3) == [2, 1, 3]
    assert parse_citations("no citations", 3) == []
    assert split_answer_sentences("Port 5273. [1]\nIt is set by LOKAL_PORT [2]. Done!") == [
        "Port 5273. [1]",
        "It is set by LOKAL_PORT [2].",
        "Done!",
    ]


def test_endpoint_failures_become_clear_errors(retriever: Retriever, fake_openai: FakeOpenAI) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UpstreamError, match="cannot reach .* is `lokal serve`"):
        _ask(retriever, "How often must the turbine be inspected?", down, model="m")
    fake_openai.fail_status = 503
    with pytest.raises(UpstreamError, match="503"):
        _ask(retriever, "How often must the turbine be inspected?", fake_openai.base_url, model="m")
