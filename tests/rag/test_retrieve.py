from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lokal.rag.index import Index
from lokal.rag.retrieve import MODES, Retriever, bm25_from_files, build_bm25, rrf
from tests.rag.helpers import KNOWN_QUESTIONS, Ingested, copy_collection


@pytest.fixture(scope="module")
def retriever(ingested: Ingested, embedder: Any) -> Iterator[Retriever]:
    with Index.open(ingested.collection, ingested.home) as idx:
        yield Retriever(idx, embedder)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("question", "source", "phrase"), KNOWN_QUESTIONS)
def test_known_question_finds_its_chunk_in_top_3(
    retriever: Retriever, mode: str, question: str, source: str, phrase: str
) -> None:
    hits = retriever.search(question, k=3, mode=mode)  # type: ignore[arg-type]
    assert len(hits) <= 3 and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert any(h.name == source and phrase in h.text for h in hits), [(h.name, h.text[:60]) for h in hits]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_hits_say_where_they_come_from(retriever: Retriever) -> None:
    (hit,) = retriever.search("Which oil should be used to lubricate the gearbox?", k=1)
    assert (hit.name, hit.location) == ("manual.pdf", "page 2")
    (hit,) = retriever.search("Which port does the server listen on by default?", k=1, mode="bm25")
    assert hit.location.startswith("Lokal user guide > Configuration, line")
    assert hit.bm25 is not None and hit.bm25 > 0 and hit.dense is None  # BM25 alone never loads vectors


def test_hybrid_fuses_both_rankings(retriever: Retriever) -> None:
    hits = retriever.search("How do emperor penguins survive the Antarctic winter?", k=5, mode="hybrid")
    assert hits[0].bm25 is not None and hits[0].dense is not None
    assert hits[0].score == pytest.approx(2 / 61)  # ranked first by BM25 and by cosine
    assert rrf([[1, 2, 3], [3, 1]]) == pytest.approx({1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61})


def test_metadata_filters(retriever: Retriever) -> None:
    question = "How often must the turbine be inspected?"
    only_pdf = retriever.search(question, k=5, filters={"kind": "pdf"})
    assert only_pdf and {h.name for h in only_pdf} == {"manual.pdf"}
    no_pdf = retriever.search(question, k=5, filters={"source": "*.md"})
    assert no_pdf and {h.name for h in no_pdf} == {"guide.md"}
    assert (
        retriever.search(question, k=5, filters={"heading": "*Configuration*"})[0].headings[-1]
        == "Configuration"
    )
    assert retriever.search(question, filters={"no-such-field": "x"}) == []


def test_stop_words_only_and_bad_mode(retriever: Retriever) -> None:
    assert retriever.search("the of and", mode="bm25") == []
    assert len(retriever.search("the of and", mode="hybrid", k=2)) == 2  # dense still ranks
    with pytest.raises(ValueError, match="mode"):
        retriever.search("x", mode="fuzzy")  # type: ignore[arg-type]


def test_bm25_is_stored_in_the_sqlite_file_and_rebuilt_when_stale(ingested: Ingested, home: Path) -> None:
    copy_collection(ingested, home)
    with Index.open("docs", home) as idx:
        files = idx.load_bm25(idx.generation())
        assert files, "ingest stores the BM25 index with the chunks"
        stored = bm25_from_files(files)
        chunks, _ = idx.load_chunks()
        fresh = build_bm25([c.index_text for c in chunks])
        query = ["turbin", "inspect"]  # stemmed tokens
        assert np.allclose(stored.get_scores(query), fresh.get_scores(query))

        with idx.transaction():  # any write makes the stored index stale
            idx.delete_document(next(p for p in idx.documents() if p.endswith("manual.pdf")))
        assert idx.load_bm25(idx.generation()) is None
        r = Retriever(idx, lambda: pytest.fail("BM25 search must not load the embedder"))  # type: ignore[arg-type,return-value]
        assert r.search("turbine inspected", mode="bm25") == []
        assert idx.load_bm25(idx.generation()) is not None  # the rebuilt one was stored
