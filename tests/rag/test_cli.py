from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from lokal.cli.rag import app
from tests.rag.helpers import KNOWN_QUESTIONS, FakeOpenAI

runner = CliRunner()


def _json(args: list[str]) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_search_ask_eval_list_drop(
    lokal_home: Path, corpus: Path, fake_openai: FakeOpenAI, tmp_path: Path, embedder: Any
) -> None:
    (corpus / "image.txt").write_bytes(b"\x00\x01binary")
    first = runner.invoke(app, ["ingest", str(corpus), "-c", "docs", "--max-chars", "200"])
    assert first.exit_code == 0, first.output
    assert "5 added" in first.stdout and "1 skipped" in first.stdout
    assert "skipped" in first.stderr and "image.txt: binary content" in first.stderr
    assert (lokal_home / "rag" / "docs.sqlite").is_file()

    again = _json(["ingest", str(corpus), "-c", "docs", "--max-chars", "200", "--json"])
    assert (again["unchanged"], again["added"], again["chunks_written"]) == (5, 0, 0)

    hits = _json(["search", "How often must the turbine be inspected?", "-c", "docs", "-k", "3", "--json"])[
        "hits"
    ]
    assert len(hits) == 3 and hits[0]["source"].endswith("manual.pdf") and hits[0]["location"] == "page 1"
    text = runner.invoke(
        app, ["search", "emperor penguins", "-c", "docs", "-k", "1", "--mode", "bm25"]
    ).stdout
    assert "animals.html" in text and "Animal facts > Penguins" in text and "huddle together" in text

    base = ["-c", "docs", "--base-url", fake_openai.base_url]
    streamed = runner.invoke(app, ["ask", "How often must the turbine be inspected?", *base])
    assert streamed.exit_code == 0, streamed.output
    assert "400 operating hours. [1]" in streamed.stdout
    assert "Sources" in streamed.stdout and "[1] manual.pdf, page 1" in streamed.stdout

    answer = _json(["ask", "Which port does the server listen on by default?", *base, "--json"])
    assert answer["cited"] == [1] and answer["sources"][0]["source"].endswith("guide.md")
    refused = _json(["ask", "What is the capital of France?", *base, "--json"])
    assert refused["refused"] is True and refused["sources"] == []

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"question": q, "expected_source": s}) for q, s, _ in KNOWN_QUESTIONS))
    report = _json(["eval", str(qa), "-c", "docs", "--no-answers", "--json"])
    assert report["summary"]["hit@3"] == 1.0 and report["summary"]["questions"] == len(KNOWN_QUESTIONS)
    table = runner.invoke(app, ["eval", str(qa), "-c", "docs", "--base-url", fake_openai.base_url])
    assert table.exit_code == 0 and "citation_coverage: 1.000" in table.stdout

    listed = _json(["list", "--json"])
    assert [(c["name"], c["documents"]) for c in listed] == [("docs", 5)]
    assert runner.invoke(app, ["drop", "docs", "--yes"]).exit_code == 0
    assert not (lokal_home / "rag" / "docs.sqlite").exists()


def test_errors_are_one_line_not_a_traceback(lokal_home: Path, corpus: Path) -> None:
    missing = runner.invoke(app, ["search", "anything", "-c", "nope"])
    assert missing.exit_code == 1 and "collection 'nope' does not exist" in missing.stderr
    assert "Traceback" not in missing.output
    assert runner.invoke(app, ["search", "x", "--mode", "fuzzy"]).exit_code == 2
    assert runner.invoke(app, ["search", "x", "--filter", "novalue"]).exit_code == 2
    bad_name = runner.invoke(app, ["ingest", str(corpus), "-c", "../x"])
    assert bad_name.exit_code == 1 and "invalid collection name" in bad_name.stderr
