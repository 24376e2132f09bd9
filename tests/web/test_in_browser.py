"""In-browser inference in real headless Chromium: the vendored transformers.js runs lokal's web models in
the page, on WASM (Chromium with --disable-gpu has WebGPU but no adapter) and on WebGPU through SwiftShader.

The module's server has the tiny GGUF ("tiny", no web variant), a synthetic web model written by
`lokal model synth --like tiny --format web`, and a web variant whose folder lacks its graph.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route

from tests.support.models import standard_entries, write_catalog
from tests.support.server import LokalServer
from tests.web.conftest import ARTIFACTS, CHROMIUM, needs_chromium
from tests.web.playground import chart_state, send

pytestmark = needs_chromium

WEB = "tiny-web"
# Chromium exposes a WebGPU adapter on a machine without a GPU with these (SwiftShader, on the CPU).
WEBGPU_ARGS = ["--headless", "--no-sandbox", "--enable-unsafe-webgpu", "--use-angle=swiftshader",
               "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader"]  # fmt: skip
DONE = "#pane-a .msg.assistant[data-state=done]"
SETTLED = "#pane-a .msg.assistant:not([data-state=streaming]), #pane-a .error"


@pytest.fixture(scope="module")
def web_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("web-home")
    broken = home / "models" / "synthetic" / "broken-web" / "web"
    write_catalog(
        home,
        [
            *standard_entries(tiny_gguf),
            {
                "alias": "broken-web",
                "synthetic": True,
                "description": "a web model whose graph was deleted",
                "variants": [{"id": "broken-web-webgpu:1", "device": "webgpu", "engine": "web", "path": str(broken)}],
            },
        ],  # fmt: skip
    )
    env = {**os.environ, "LOKAL_HOME": str(home), "LOKAL_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lokal", "model", "synth", "--like", "tiny", "--format", "web", "--alias", WEB]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered" in done.stdout and WEB in done.stdout
    shutil.copytree(home / "models" / "synthetic" / WEB / "web", broken)
    (broken / "onnx" / "model.onnx").unlink()
    with LokalServer(home, args=["--model", "tiny"]) as server:
        yield server


def chat_count(server: LokalServer) -> float:
    """POST /v1/chat/completions the server has answered, from its own /metrics."""
    text = httpx.get(server.url + "/metrics").text
    found = re.findall(r'lokal_requests_total\{[^}]*endpoint="/v1/chat/completions"[^}]*\} ([0-9.e+]+)', text)
    return sum(float(v) for v in found)


class Traffic:
    """Every request the page makes; anything not on the server's origin is aborted and remembered."""

    def __init__(self, page: Page, origin: str) -> None:
        self.urls: list[str] = []
        self.offsite: list[str] = []
        self.origin = origin
        page.on("request", self._seen)
        page.route(re.compile(r"^(?!" + re.escape(origin) + ").*"), self._block)

    def _seen(self, request: Request) -> None:
        self.urls.append(request.url)

    def _block(self, route: Route) -> None:
        self.offsite.append(route.request.url)
        route.abort()

    def chat_posts(self) -> list[str]:
        return [u for u in self.urls if u.endswith("/v1/chat/completions")]


def answer(page: Page, timeout: float = 60_000) -> dict[str, str]:
    page.wait_for_selector(SETTLED, timeout=timeout)
    result: dict[str, str] = page.evaluate(
        """() => {
            const m = [...document.querySelectorAll('#pane-a .msg.assistant')].pop();
            const err = [...document.querySelectorAll('#pane-a .error')].pop();
            return { state: m?.dataset.state ?? 'none', path: m?.dataset.path ?? '', tokens: m?.dataset.tokens ?? '',
                     text: m?.querySelector('.msg-body')?.textContent ?? '',
                     error: (m?.querySelector('.error') ?? err)?.textContent ?? '' };
        }"""
    )
    return result


def test_synthetic_web_model_generates_in_the_page_without_the_server(page: Page, web_server: LokalServer) -> None:
    traffic = Traffic(page, web_server.url)
    before = chat_count(web_server)
    page.goto(f"{web_server.url}/?engine=browser&model={WEB}&prompt=Say+hello&autorun=1")
    got = answer(page)
    assert got["state"] == "done", got
    assert got["path"] == "wasm", "Chromium without a GPU adapter must fall back to WASM"
    assert int(got["tokens"]) >= 2 and got["text"].strip()
    assert page.evaluate("self.crossOriginIsolated"), "lokal serves the page with COOP/COEP: WASM threads"
    status = page.inner_text("#browser-status")
    assert "WASM" in status and "thread" in status
    assert traffic.chat_posts() == [] and chat_count(web_server) == before, "the server answered a chat"
    assert any(f"/static/models/{WEB}/onnx/model.onnx" in u for u in traffic.urls)
    assert any(u.endswith("/static/vendor/ort-wasm-simd-threaded.jsep.wasm") for u in traffic.urls)
    assert traffic.offsite == [], f"the page reached off the machine: {traffic.offsite}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-in-browser.png"))

    # The same prompt on the server beside it: the chart compares the two paths.
    page.check("#compare")
    page.select_option("#engine-b", "server")
    page.select_option("#model-b", "tiny")
    page.fill("#max-tokens", "32")
    page.dispatch_event("#max-tokens", "change")
    send(page, "Say hello")
    page.wait_for_function(
        "() => ['a','b'].every(p => document.querySelectorAll(`#pane-${p} .msg.assistant[data-state=done]`).length"
        " === (p === 'a' ? 2 : 1))",
        timeout=60_000,
    )
    assert page.get_attribute("#pane-b .msg.assistant", "data-path") == "server"
    assert len(traffic.chat_posts()) == 1 and chat_count(web_server) == before + 1
    chart = chart_state(page)
    assert {b["model"] for b in chart["bars"]} == {f"{WEB} · wasm", "tiny"}
    assert {row[0] for row in chart["rows"]} == {f"{WEB} · wasm", "tiny"}
    page.screenshot(path=str(ARTIFACTS / "playground-browser-vs-server.png"))


PASSAGES = """The Lighthouse of Alexandria was built on the island of Pharos in the third century BC.

Honey bees communicate the direction of flowers to their hive mates with a waggle dance.

The boiling point of water drops at altitude: on Everest it boils at about 70 degrees Celsius.

Penguins live almost exclusively in the Southern Hemisphere, the emperor penguin in Antarctica."""


def test_in_page_rag_with_minilm_puts_the_answering_passage_first(page: Page, web_server: LokalServer) -> None:
    traffic = Traffic(page, web_server.url)
    page.goto(f"{web_server.url}/?engine=browser&model={WEB}")
    page.wait_for_selector("#server-status[data-state=ok]")
    page.click("label:has(input[value=text])")
    page.fill("#rag-text", PASSAGES)
    page.dispatch_event("#rag-text", "change")
    page.check("#rag-rank")
    page.fill("#max-tokens", "8")
    page.dispatch_event("#max-tokens", "change")
    send(page, "How do bees tell each other where the flowers are?")
    got = answer(page, timeout=90_000)
    assert got["state"] == "done", got
    ranked = page.eval_on_selector_all(
        "#pane-a .msg.assistant .sources li",
        "items => items.map(li => [li.querySelector('.passage-label').textContent,"
        " li.querySelector('.passage-text').textContent])",
    )
    assert len(ranked) == 3, ranked  # the top 3 of 4
    assert ranked[0] == ["[1] passage 2", PASSAGES.split("\n\n")[1]], ranked
    assert any(u.endswith("/static/models/all-minilm-l6-v2/onnx/model.onnx") for u in traffic.urls)
    server_work = ("/v1/embeddings", "/v1/rag/search", "/v1/chat/completions")
    assert not [u for u in traffic.urls if u.endswith(server_work)], traffic.urls
    assert traffic.offsite == []
    page.screenshot(path=str(ARTIFACTS / "playground-in-page-rag.png"))


def test_bad_inputs_give_readable_messages(page: Page, web_server: LokalServer) -> None:
    page.goto(f"{web_server.url}/?engine=browser&model=tiny&prompt=hi&autorun=1")  # tiny has no web variant
    got = answer(page, timeout=20_000)
    assert got["state"] == "error" and "has no browser (webgpu) variant" in got["error"], got
    assert "no_web_variant" in got["error"]

    page.goto(f"{web_server.url}/?engine=browser&model=broken-web&prompt=hi&autorun=1")
    got = answer(page, timeout=20_000)
    assert got["state"] == "error" and "incomplete" in got["error"] and "onnx/model*.onnx" in got["error"], got

    # The server's model refuses to load on the server, with a pointer to the page.
    res = httpx.post(web_server.base_url + "/chat/completions", json={"model": WEB, "messages": [
        {"role": "user", "content": "hi"}]}, timeout=30)  # fmt: skip
    assert res.status_code >= 400 and "runs in the browser" in res.json()["error"]["message"]
    page.screenshot(path=str(ARTIFACTS / "playground-in-browser-errors.png"))


def test_without_webgpu_or_isolation_it_says_so_and_still_answers(browser: Browser, web_server: LokalServer) -> None:
    # A proxy that drops COOP/COEP, in a browser whose WebGPU gives no adapter (--disable-gpu).
    context = browser.new_context()
    page = context.new_page()

    def strip(route: Route) -> None:
        response = route.fetch()
        headers = {k: v for k, v in response.headers.items() if not k.lower().startswith("cross-origin-")}
        route.fulfill(response=response, headers=headers)

    page.route(re.compile(re.escape(web_server.url) + r"/($|\?)"), strip)
    page.goto(f"{web_server.url}/?engine=browser&model={WEB}&prompt=hi&autorun=1")
    got = answer(page)
    status = page.inner_text("#browser-status")
    context.close()
    assert "not cross-origin isolated" in status and "no adapter" in status, status
    assert got["state"] == "done" and got["path"] == "wasm", got


@pytest.fixture(scope="module")
def webgpu_browser(browser: Browser) -> Iterator[Browser]:
    """A second Chromium from the package's Playwright (one sync Playwright per process), with WebGPU on."""
    b = browser.browser_type.launch(executable_path=str(CHROMIUM), args=WEBGPU_ARGS)
    yield b
    b.close()


@pytest.mark.slow  # SwiftShader emulates the GPU on the CPU: a few tokens/s, seconds to compile shaders
def test_webgpu_path_through_swiftshader(webgpu_browser: Browser, web_server: LokalServer) -> None:
    page = webgpu_browser.new_page()
    page.goto(f"{web_server.url}/?engine=browser&model={WEB}")
    page.wait_for_selector("#server-status[data-state=ok]")
    page.fill("#max-tokens", "6")
    page.dispatch_event("#max-tokens", "change")
    send(page, "hi")
    got = answer(page, timeout=120_000)
    assert got["state"] == "done" and got["path"] == "webgpu", got
    assert "WebGPU" in page.inner_text("#browser-status")
    page.screenshot(path=str(ARTIFACTS / "playground-webgpu.png"))
    page.close()


def test_web_model_listing(web_server: LokalServer) -> None:
    cards = {c["id"]: c for c in httpx.get(web_server.url + "/lokal/web/models").json()["data"]}
    assert cards[WEB]["ready"] and cards[WEB]["dtypes"] == ["fp32"] and cards[WEB]["synthetic"]
    assert cards["broken-web"]["missing"] == ["onnx/model*.onnx"]
    assert cards["all-minilm-l6-v2"]["task"] == "embeddings"
    assert "tiny" not in cards
    config = json.loads(httpx.get(f"{web_server.url}/static/models/{WEB}/config.json").text)
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2
