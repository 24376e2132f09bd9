"""The playground in real headless Chromium against a real `lokal serve` running the tiny GGUF."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.support.server import LokalServer
from tests.web.conftest import ARTIFACTS, needs_chromium
from tests.web.playground import (
    assistant_messages,
    chart_state,
    open_playground,
    record_growth,
    send,
    wait_finished,
)

pytestmark = needs_chromium


def test_streams_switches_model_and_charts_each_answer(page: Page, lokal_server: LokalServer) -> None:
    requests = open_playground(page, lokal_server.url)
    expect(page.locator("#pane-a .pane-model")).to_have_text("tiny")
    expect(page.locator("#pane-a .badge.synthetic")).to_be_visible()

    record_growth(page)
    send(page, "Tell me a story about a lighthouse.")
    wait_finished(page, 1)
    first = assistant_messages(page).nth(0)
    expect(first).to_have_attribute("data-state", "done")
    chunks = int(first.get_attribute("data-chunks") or 0)
    lengths: list[int] = page.evaluate("window.__lengths")
    assert chunks >= 2, "the answer should arrive as several SSE chunks"
    assert len({n for n in lengths if n > 0}) >= 2, f"text never grew while streaming: {lengths}"
    assert lengths == sorted(lengths) and lengths[-1] == len(first.locator(".msg-body").inner_text())
    expect(first.locator(".msg-meta")).to_contain_text("TTFT")

    chart = chart_state(page)
    assert chart["answers"] == 1 and chart["models"] == "tiny"
    assert sorted(b["metric"] for b in chart["bars"]) == ["total", "tps", "ttft"]
    assert all(b["value"] > 0 and b["state"] == "done" for b in chart["bars"])

    page.select_option("#model-a", "tiny-coder")
    expect(page.locator("#pane-a .pane-model")).to_have_text("tiny-coder")
    send(page, "Now write a haiku.")
    wait_finished(page, 2)

    chart = chart_state(page)
    assert chart["answers"] == 2 and chart["models"] == "tiny,tiny-coder"
    assert {b["model"] for b in chart["bars"]} == {"tiny", "tiny-coder"}
    assert [row[0] for row in chart["rows"]] == ["tiny", "tiny-coder"]
    assert [b["model"] for b in requests.bodies] == ["tiny", "tiny-coder"]
    second = requests.bodies[1]
    assert second["stream"] is True and second["stream_options"] == {"include_usage": True}
    # The conversation continues: the second request carries the first turn.
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][1]["content"] == first.locator(".msg-body").inner_text()

    # The page itself never scrolls (the sidebar and the panes do), so the prompt box stays in view.
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-chat.png"))

    page.click("#reset")
    expect(assistant_messages(page)).to_have_count(0)
    send(page, "fresh start")
    wait_finished(page, 1)
    assert [m["role"] for m in requests.bodies[-1]["messages"]] == ["user"]


def test_model_picker_lists_the_servers_chat_models(page: Page, lokal_server: LokalServer) -> None:
    open_playground(page, lokal_server.url)
    cards = httpx.get(lokal_server.base_url + "/models").json()["data"]
    chat = [c for c in cards if c["lokal"].get("task") != "embeddings"]
    options = page.eval_on_selector_all("#model-a option", "os => os.map(o => [o.value, o.textContent])")
    labels = dict(options)
    assert set(labels) == {c["id"] for c in chat} | {"__custom__"}
    assert "all-minilm-l6-v2" not in labels
    for card in chat:
        if card["lokal"].get("synthetic"):
            assert "synthetic" in labels[card["id"]]
        if card["lokal"].get("router"):
            assert "router" in labels[card["id"]]


def test_side_by_side_sends_one_prompt_to_two_models(page: Page, lokal_server: LokalServer) -> None:
    requests = open_playground(page, lokal_server.url)
    page.check("#compare")
    expect(page.locator("#pane-b")).to_be_visible()
    page.select_option("#model-a", "tiny")
    page.select_option("#model-b", "tiny-coder")
    send(page, "Compare yourselves.")
    wait_finished(page, 1, "a")
    wait_finished(page, 1, "b")

    assert sorted(b["model"] for b in requests.bodies) == ["tiny", "tiny-coder"]
    assert {b["messages"][-1]["content"] for b in requests.bodies} == {"Compare yourselves."}
    for pane, model in (("a", "tiny"), ("b", "tiny-coder")):
        answer = assistant_messages(page, pane).nth(0)
        expect(answer).to_have_attribute("data-state", "done")
        expect(answer).to_have_attribute("data-model", model)
    chart = chart_state(page)
    assert chart["answers"] == 2 and set(chart["models"].split(",")) == {"tiny", "tiny-coder"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-side-by-side.png"))


def test_pasted_context_grounds_the_request_and_is_shown(page: Page, lokal_server: LokalServer) -> None:
    requests = open_playground(page, lokal_server.url)
    page.fill("#system-prompt", "You are terse.")
    page.click("label:has(input[value=text])")
    context = "The lighthouse on Skerry Isle was built in 1851.\n\nIts keeper in 1900 was Ada Munro."
    page.fill("#rag-text", context)
    expect(page.locator("#rag-text-info")).to_contain_text("2 passages")
    send(page, "Who kept the lighthouse?")
    wait_finished(page, 1)

    messages = requests.bodies[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert system.startswith("You are terse.")
    assert "Answer only from the context" in system
    assert "[1] The lighthouse on Skerry Isle was built in 1851." in system
    assert "[2] Its keeper in 1900 was Ada Munro." in system
    assert messages[1]["content"] == "Who kept the lighthouse?"

    passages = assistant_messages(page).nth(0).locator(".sources li")
    expect(passages).to_have_count(2)
    expect(passages.nth(1)).to_contain_text("Ada Munro")

    # The context is per turn; the history sent next time holds only the question and the answer.
    send(page, "When was it built?")
    wait_finished(page, 2)
    follow_up = requests.bodies[1]["messages"]
    assert [m["role"] for m in follow_up] == ["system", "user", "assistant", "user"]
    assert follow_up[1]["content"] == "Who kept the lighthouse?"


def test_cited_passages_are_marked(page: Page, lokal_server: LokalServer) -> None:
    """The tiny model's text is noise and never cites, so this one answer comes from a scripted stream."""
    open_playground(page, lokal_server.url)
    page.click("label:has(input[value=text])")
    page.fill("#rag-text", "Alpha is first.\n\nBeta is second.\n\nGamma is third.")

    def scripted(route: Route) -> None:
        pieces = ["Beta comes ", "second [2]", ", gamma [3, 1]."]
        events: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
        ]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=sse)

    page.route("**/v1/chat/completions", scripted)
    send(page, "Which is second?")
    wait_finished(page, 1)
    answer = assistant_messages(page).nth(0)
    expect(answer.locator("mark.cite")).to_have_text(["[2]", "[3, 1]"])
    expect(answer.locator(".sources")).to_have_attribute("data-cited", "2,3,1")
    expect(answer.locator(".sources li.cited")).to_have_count(3)
    expect(answer.locator(".sources summary")).to_contain_text("Cited: [2] [3] [1]")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-citations.png"))


def test_server_errors_are_rendered_readably(page: Page, lokal_server: LokalServer) -> None:
    open_playground(page, lokal_server.url)

    page.select_option("#model-a", "__custom__")
    page.fill("#model-a-custom", "does-not-exist")
    send(page, "hello?")
    wait_finished(page, 1)
    error = assistant_messages(page).nth(0).locator(".error")
    expect(error).to_have_attribute("data-code", "model_not_found")
    expect(error).to_contain_text("model_not_found")
    expect(error).to_contain_text("HTTP 404")
    expect(error).to_contain_text("invalid_request_error")
    expect(error).to_contain_text("'does-not-exist' is not in the catalog")

    page.select_option("#model-a", "tiny")
    page.fill("#max-tokens", "0")
    send(page, "hello again")
    wait_finished(page, 2)
    error = assistant_messages(page).nth(1).locator(".error")
    expect(error).to_contain_text("max_tokens must be a positive integer")
    expect(error).to_contain_text("HTTP 400")
    expect(error).to_contain_text("param: max_tokens")
    assert chart_state(page)["answers"] == 0, "failed requests are not plotted"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-errors.png"))

    # A refused connection is a network error, not a server error.
    page.fill("#max-tokens", "16")
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    send(page, "anyone there?")
    wait_finished(page, 3)
    error = assistant_messages(page).nth(2).locator(".error")
    expect(error).to_contain_text("network error")
    expect(error).to_contain_text("lokal serve")


def test_javascript_helpers(page: Page, lokal_server: LokalServer) -> None:
    """The page's own modules, imported in the browser: SSE framing, passages, citations."""
    open_playground(page, lokal_server.url)
    result = page.evaluate(
        """async () => {
            const rag = await import("/static/js/rag.js");
            const api = await import("/static/js/api.js");
            const body = 'data: {"a":1}\\n\\n: comment\\n\\ndata: line1\\ndata: line2\\r\\n\\r\\ndata: [DONE]\\n\\n';
            const res = new Response(new Blob([body]).stream());
            const events = [];
            for await (const d of api.sseData(res)) events.push(d);
            const long = Array.from({ length: 80 }, (_, i) => `Sentence number ${i} is here.`).join(" ");
            return {
                events,
                passages: rag.splitPassages("one\\n\\n\\n  two  \\n\\nthree").map((p) => p.text),
                longPieces: rag.splitPassages(long).map((p) => p.text.length),
                cited: rag.citedNumbers("a [2] b [1; 3] c [9] d [2]", 3),
                err: { ...api.ApiError.fromPayload({ error: { message: "m", type: "t", code: "c", param: "p" } },
                                                   418) },
            };
        }"""
    )
    assert result["events"] == ['{"a":1}', "line1\nline2", "[DONE]"]
    assert result["passages"] == ["one", "two", "three"]
    assert len(result["longPieces"]) >= 2 and max(result["longPieces"]) <= 1200
    assert result["cited"] == [2, 1, 3]
    assert result["err"]["status"] == 418 and result["err"]["code"] == "c" and result["err"]["param"] == "p"


def test_router_model_shows_where_it_routed(page: Page, lokal_server: LokalServer) -> None:
    cards = httpx.get(lokal_server.base_url + "/models").json()["data"]
    if not any(c["id"] == "auto" for c in cards):
        pytest.skip("this server lists no 'auto' model (the router is not installed)")
    requests = open_playground(page, lokal_server.url)
    page.select_option("#model-a", "auto")
    expect(page.locator("#pane-a .badge.router")).to_be_visible()
    send(page, "Summarize: the cat sat on the mat.")
    wait_finished(page, 1)
    answer = assistant_messages(page).nth(0)
    expect(answer).to_have_attribute("data-state", "done")
    assert requests.bodies[0]["model"] == "auto"
    expect(answer.locator(".msg-meta")).to_contain_text("auto → ")
