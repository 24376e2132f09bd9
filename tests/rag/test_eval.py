from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lokal.errors import InvalidRequest
from lokal.rag.answer import make_client
from lokal.rag.eval import EvalReport, citation_coverage, evaluate, load_qa, source_matches, token_f1
from lokal.rag.index import Index
from lokal.rag.retrieve import Retriever
from tests.rag.helpers import KNOWN_QUESTIONS, FakeOpenAI, Ingested

REFERENCES = {
    "guide.md": "The server listens on port 5273 by default, the same port that Foundry Local uses.",
    "notes.txt": "The coffee machine on the third floor is descaled every Friday afternoon by the facilities team.",
    "animals.html": "Emperor penguins huddle together in large groups to survive the freezing Antarctic winter.",
}


@pytest.fixture(scope="module")
def retriever(ingested: Ingested, embedder: Any) -> Iterator[Retriever]:
    with Index.open(ingested.collection, ingested.home) as idx:
        yield Retriever(idx, embedder)


def write_qa(path: Path) -> Path:
    lines = [{"question": q, "expected_source": src} for q, src, _ in KNOWN_QUESTIONS]
    for line in lines:
        if line["expected_source"] in REFERENCES:
            line["expected_answer"] = REFERENCES[line["expected_source"]]
    lines.append({"question": "Who painted the Mona Lisa?", "expected_source": "art.md"})  # not in the corpus
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    return path


def test_retrieval_metrics(retriever: Retriever, tmp_path: Path) -> None:
    items = load_qa(write_qa(tmp_path / "qa.jsonl"))
    report = asyncio.run(evaluate(retriever, items, k=3))
    summary = report.summary()
    assert summary["questions"] == summary["with_expected_source"] == 7
    assert summary["hit@3"] == pytest.approx(6 / 7)  # all known questions hit, the Mona Lisa cannot
    ranks = [r.rank for r in report.rows]
    assert ranks[-1] is None and all(r is not None for r in ranks[:-1])
    assert summary["mrr"] == pytest.approx(sum(1 / r for r in ranks if r) / 7)
    assert summary["token_f1"] is None and summary["refusal_rate"] is None  # no answers asked for


def test_answer_metrics_against_a_deterministic_model(
    retriever: Retriever, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    items = load_qa(write_qa(tmp_path / "qa.jsonl"))

    async def main() -> EvalReport:
        client = make_client(fake_openai.base_url)
        try:
            return await evaluate(retriever, items, k=3, client=client)
        finally:
            await client.close()

    report = asyncio.run(main())
    summary = report.summary()
    # the fake model repeats passage [1]'s first sentence and cites it: the references are those sentences,
    # except that the notes chunk opens with its title ("Office notes"), two extra tokens in the answer
    source_of = {q: src for q, src, _ in KNOWN_QUESTIONS}
    f1 = {source_of[row.question]: row.f1 for row in report.rows if row.f1 is not None}
    assert f1["guide.md"] == f1["animals.html"] == pytest.approx(1.0)
    notes = REFERENCES["notes.txt"]
    assert f1["notes.txt"] == pytest.approx(token_f1("Office notes " + notes, notes))
    assert summary["token_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert summary["citation_coverage"] == pytest.approx(1.0)
    assert summary["cited_expected_source"] == pytest.approx(1.0)
    assert summary["refusal_rate"] == pytest.approx(1 / 7)  # the Mona Lisa is refused, not answered
    assert len(fake_openai.requests) == 6
    assert all(r["temperature"] == 0.0 for r in fake_openai.requests)


def test_metric_arithmetic() -> None:
    assert token_f1("The port is 5273.", "port 5273") == pytest.approx(0.8)  # P 2/3, R 1
    assert token_f1("nothing alike", "port 5273") == 0.0
    assert citation_coverage("Port 5273 [1]. It can change. Use LOKAL_PORT [2].", 2) == pytest.approx(2 / 3)
    assert citation_coverage("Wrong number [7].", 2) == 0.0
    assert source_matches("/home/u/docs/guide.md", "guide.md")
    assert source_matches("/home/u/docs/guide.md", "docs/guide.md")
    assert source_matches("/home/u/docs/guide.md", "*.md")
    assert not source_matches("/home/u/docs/myguide.md", "guide.md")


def test_bad_qa_files_are_reported_with_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\n{not json}\n')
    with pytest.raises(InvalidRequest, match="bad.jsonl:2"):
        load_qa(bad)
    bad.write_text('{"expected_source": "x.md"}\n')
    with pytest.raises(InvalidRequest, match='"question"'):
        load_qa(bad)
    with pytest.raises(InvalidRequest, match="cannot read"):
        load_qa(tmp_path / "missing.jsonl")
