"""The playground against a server that requires an API key and runs a model slow enough to stop mid-answer.

The tiny test model writes 2000 tokens in well under a second, too fast to click Stop during; this module's
model has the same random-weight recipe with more width and depth (about 300 tokens/s on a 2-core CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from lokal.gguf.synthetic import ModelShape, write_gguf
from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer
from tests.web.conftest import ARTIFACTS, needs_chromium
from tests.web.playground import assistant_messages, chart_state, open_playground, send, wait_finished

pytestmark = needs_chromium

KEY = "playground-secret"
SLOW_SHAPE = ModelShape(n_layer=4, n_embd=512, n_head=8, n_head_kv=8, n_ff=2048, n_vocab=320, n_ctx=8192)
LONG = 6000  # tokens: 20 s or more at this model's speed, so an answer that ends early was stopped


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    root = tmp_path_factory.mktemp("web-keyed")
    gguf = write_gguf(root / "slow.gguf", SLOW_SHAPE, "f32", like="custom", seed=1)
    home = root / "home"
    write_catalog(home, [tiny_entry("slow", gguf, ["general"], context_length=8192)])
    with LokalServer(home, env={"LOKAL_API_KEY": KEY}, args=["--model", "slow"]) as server:
        yield server


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _enter_key(page: Page) -> None:
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")  # the change event: the page re-reads /v1/models with the key
    page.wait_for_selector("#server-status[data-state=ok]")


def test_api_key_from_settings_is_sent(page: Page, keyed_server: LokalServer) -> None:
    requests = open_playground(page, keyed_server.url, expect="error")
    expect(page.locator("#server-status")).to_contain_text("authentication_error")
    expect(page.locator("#server-status")).to_contain_text("API key in Settings")
    _enter_key(page)
    page.select_option("#model-a", "slow")
    page.fill("#max-tokens", "4")
    send(page, "hi")
    wait_finished(page, 1)
    expect(assistant_messages(page).nth(0)).to_have_attribute("data-state", "done")
    assert requests.headers[0].get("authorization") == f"Bearer {KEY}"

    # The key lives in this tab's sessionStorage: a reload keeps working without typing it again.
    page.reload()
    page.wait_for_selector("#server-status[data-state=ok]")


def test_stop_ends_the_stream_and_the_server_goes_idle(page: Page, keyed_server: LokalServer) -> None:
    open_playground(page, keyed_server.url, expect="error")
    _enter_key(page)
    page.select_option("#model-a", "slow")
    page.fill("#max-tokens", str(LONG))
    send(page, "Write a very long essay.")
    answer = assistant_messages(page).nth(0)
    page.wait_for_function(
        "() => Number(document.querySelector('#pane-a .msg.assistant')?.dataset.chunks ?? 0) >= 5",
        timeout=60_000,  # the machine may be busy; the model is still far from done
    )
    expect(page.locator("#stop")).to_be_enabled()
    page.click("#stop")
    stopped_at = time.monotonic()

    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator(".msg-flag")).to_have_text("stopped")
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#send")).to_be_enabled()
    chunks = int(answer.get_attribute("data-chunks") or 0)
    assert 5 <= chunks < LONG / 2
    bars = chart_state(page)["bars"]
    assert bars and all(b["state"] == "stopped" for b in bars)

    # The server noticed the disconnect and cancelled the generation: the model is idle long before
    # 6000 tokens could have been written.
    idle_after = None
    while time.monotonic() - stopped_at < 8:
        models = httpx.get(keyed_server.url + "/lokal/ps", headers=_auth()).json()["models"]
        slow = next(m for m in models if m["alias"] == "slow")
        if slow["active"] == 0 and slow["queue_depth"] == 0:
            idle_after = time.monotonic() - stopped_at
            break
        time.sleep(0.1)
    assert idle_after is not None, "the model was still generating 8 s after Stop"
    print(f"stopped after {chunks} chunks; server idle {idle_after:.2f} s after Stop")

    # And it answers the next prompt normally.
    page.fill("#max-tokens", "8")
    send(page, "short one")
    wait_finished(page, 2)
    expect(assistant_messages(page).nth(1)).to_have_attribute("data-state", "done")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-stopped.png"))


def test_collection_picker_grounds_the_answer(page: Page, keyed_server: LokalServer, tmp_path: Path) -> None:
    doc = tmp_path / "lighthouse.md"
    doc.write_text(
        "# Skerry Isle\n\nThe lighthouse on Skerry Isle was built in 1851 of grey granite.\n\n"
        "# Keepers\n\nIts keeper in 1900 was Ada Munro, who kept the lamp lit through the great storm.\n"
    )
    env = {**os.environ, "LOKAL_HOME": str(keyed_server.home), "LOKAL_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "lokal", "rag", "ingest", str(doc), "--collection", "isles"],
        env=env,
        check=True,
        capture_output=True,
        timeout=240,
    )
    listed = httpx.get(keyed_server.base_url + "/rag/collections", headers=_auth())
    if listed.status_code == 404:
        pytest.skip("this server has no /v1/rag endpoints (the RAG extra is not installed)")

    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.post_data or "") if r.url.endswith("/v1/rag/search") else None)
    requests = open_playground(page, keyed_server.url, expect="error")
    _enter_key(page)
    radio = page.locator("input[name=rag-mode][value=collection]")
    expect(radio).to_be_enabled()
    page.click("#rag-collection-option")
    page.select_option("#rag-collection", "isles")
    page.select_option("#rag-search-mode", "bm25")
    page.select_option("#model-a", "slow")
    page.fill("#max-tokens", "4")
    send(page, "Who was the keeper in 1900?")
    wait_finished(page, 1, timeout=60_000)

    assert len(searches) == 1 and '"collection":"isles"' in searches[0] and '"mode":"bm25"' in searches[0]
    system = requests.bodies[0]["messages"][0]["content"]
    assert "Answer only from the context" in system
    assert "[1] (lighthouse.md" in system and "Ada Munro" in system
    sources = assistant_messages(page).nth(0).locator(".sources li")
    expect(sources.first).to_contain_text("lighthouse.md")
    assert requests.headers[0].get("authorization") == f"Bearer {KEY}"


def test_reset_mid_answer_starts_a_clean_conversation(page: Page, keyed_server: LokalServer) -> None:
    requests = open_playground(page, keyed_server.url, expect="error")
    _enter_key(page)
    page.select_option("#model-a", "slow")
    page.fill("#max-tokens", "4")
    send(page, "first turn")
    wait_finished(page, 1)
    page.fill("#max-tokens", str(LONG))
    send(page, "second turn, long")
    page.wait_for_function(
        "() => Number(document.querySelectorAll('#pane-a .msg.assistant')[1]?.dataset.chunks ?? 0) >= 2",
        timeout=60_000,
    )
    page.click("#reset")
    expect(assistant_messages(page)).to_have_count(0)
    expect(page.locator("#send")).to_be_enabled()

    page.fill("#max-tokens", "4")
    send(page, "after reset")
    wait_finished(page, 1)
    # Neither the finished first turn nor the aborted second one leaks into the new conversation.
    assert [m["content"] for m in requests.bodies[-1]["messages"]] == ["after reset"]
