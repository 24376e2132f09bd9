"""One relevance gate, one refusal: the server's search, `lokal rag search|ask` (warm on the server, or in
process) and the playground's Collection mode agree on what is relevant and refuse with the same words."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from lokal.cli.rag import app as rag_app
from lokal.config import get_settings
from lokal.rag.gate import DEFAULT_MIN_SCORE, refusal
from tests.rag.helpers import FakeOpenAI, Ingested, copy_collection
from tests.support.models import standard_entries, write_catalog
from tests.support.server import LokalServer

runner = CliRunner()
OFF_TOPIC = "What is the capital of France?"
ON_TOPIC = "How often must the turbine be inspected?"
CHROMIUM = Path(os.environ.get("LOKAL_TEST_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def served(ingested: Ingested, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    """A real `lokal serve` whose LOKAL_HOME holds the ingested "docs" collection."""
    home = tmp_path_factory.mktemp("gate-home")
    copy_collection(ingested, home)
    write_catalog(home, standard_entries(tiny_gguf))
    with LokalServer(home, args=["--model", "tiny"]) as server:
        yield server


def test_server_search_applies_the_gate_and_says_the_refusal(served: LokalServer) -> None:
    off = httpx.post(served.url + "/v1/rag/search", json={"collection": "docs", "query": OFF_TOPIC}, timeout=60)
    assert off.status_code == 200, off.text
    body = off.json()
    best = body["gate"]["best_similarity"]
    assert body["gate"] == {"min_score": DEFAULT_MIN_SCORE, "best_similarity": best, "passed": False}
    assert body["context"] == [] and body["refusal"] == refusal("docs", best, DEFAULT_MIN_SCORE)
    assert body["data"] and all(h["dense"] < DEFAULT_MIN_SCORE for h in body["data"])  # shown, not used

    on = httpx.post(served.url + "/v1/rag/search", json={"collection": "docs", "query": ON_TOPIC, "k": 3}).json()
    assert on["gate"]["passed"] is True and on["refusal"] is None
    assert on["context"] and on["context"][0] == 1
    assert all(h["dense"] >= DEFAULT_MIN_SCORE for h in on["data"] if h["rank"] in on["context"])

    strict = httpx.post(
        served.url + "/v1/rag/search", json={"collection": "docs", "query": ON_TOPIC, "min_score": 0.99}
    ).json()
    assert strict["context"] == [] and "< 0.99" in strict["refusal"]


def test_cli_uses_the_warm_server_search_and_refuses_the_same(
    served: LokalServer, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOKAL_HOME", str(served.home))
    monkeypatch.setenv("LOKAL_BASE_URL", served.url)
    get_settings.cache_clear()
    try:
        warm = runner.invoke(rag_app, ["search", ON_TOPIC, "-c", "docs", "--json"])
        assert warm.exit_code == 0, warm.output
        warm_body = json.loads(warm.stdout)
        assert warm_body["searched_on"] == served.url
        local = json.loads(runner.invoke(rag_app, ["search", ON_TOPIC, "-c", "docs", "--json", "--in-process"]).stdout)
        assert local["searched_on"] == "in-process"
        assert [h["chunk_id"] for h in warm_body["hits"]] == [h["chunk_id"] for h in local["hits"]]
        assert warm_body["gate"]["passed"] is local["gate"]["passed"] is True

        text = runner.invoke(rag_app, ["search", ON_TOPIC, "-c", "docs", "-k", "3"])
        assert f"searched on {served.url}" in text.stderr
        first = text.stdout.splitlines()[0]
        sim = warm_body["hits"][0]["dense"]
        assert f"similarity {sim:.2f}" in first and f"{sim:.4f}" not in first  # two decimals, readable

        off = runner.invoke(rag_app, ["search", OFF_TOPIC, "-c", "docs", "-k", "2"])
        assert "below --min-score 0.25: not used to answer" in off.stdout

        base = ["-c", "docs", "--base-url", fake_openai.base_url, "--json"]
        refused = json.loads(runner.invoke(rag_app, ["ask", OFF_TOPIC, *base]).stdout)
        server_refusal = httpx.post(
            served.url + "/v1/rag/search", json={"collection": "docs", "query": OFF_TOPIC, "k": 4}
        ).json()["refusal"]
        assert refused["refused"] is True and refused["answer"] == server_refusal  # the same words
        assert refused["searched_on"] == served.url and fake_openai.requests == []

        answered = json.loads(runner.invoke(rag_app, ["ask", ON_TOPIC, *base]).stdout)
        assert answered["searched_on"] == served.url and answered["cited"] == [1]
        assert "400 operating hours" in answered["answer"]
    finally:
        get_settings.cache_clear()


def test_cli_ignores_a_server_that_reads_another_home(
    served: LokalServer, ingested: Ingested, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_collection(ingested, home)  # a "docs" of the same name, in another LOKAL_HOME
    monkeypatch.setenv("LOKAL_HOME", str(home))
    monkeypatch.setenv("LOKAL_BASE_URL", served.url)
    get_settings.cache_clear()
    try:
        res = runner.invoke(rag_app, ["search", ON_TOPIC, "-c", "docs", "--json"])
        assert res.exit_code == 0 and json.loads(res.stdout)["searched_on"] == "in-process"
    finally:
        get_settings.cache_clear()


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found")
def test_playground_collection_mode_refuses_like_the_cli(served: LokalServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.web.conftest import CHROMIUM_ARGS
    from tests.web.playground import ChatRequests, open_playground, send, wait_finished

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            errors: list[Any] = []
            page.on("pageerror", lambda err: errors.append(err))
            requests: ChatRequests = open_playground(page, served.url)
            page.click("label:has(input[value=collection])")
            page.select_option("#rag-collection", "docs")

            send(page, OFF_TOPIC)
            refusal_box = page.locator("#pane-a .msg.assistant.refusal")
            expect(refusal_box).to_have_count(1, timeout=60_000)  # the first search loads the embedder
            expect(refusal_box).to_contain_text("I can't answer this from the collection 'docs'")
            expect(refusal_box).to_contain_text("nothing relevant was found")
            assert requests.bodies == []  # the model was not asked to answer from irrelevant passages

            send(page, ON_TOPIC)
            wait_finished(page, 2)
            (body,) = requests.bodies
            system = body["messages"][0]["content"]
            assert "400 operating hours" in system
            assert OFF_TOPIC not in json.dumps(body["messages"])  # a refused turn is not history
            page.screenshot(path=str(tmp_path / "playground-refusal.png"))
            assert not errors, errors
        finally:
            browser.close()
