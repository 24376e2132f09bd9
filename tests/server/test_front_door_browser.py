"""The browser-only attacks, in headless Chromium: a page on another site, and DNS rebinding.

Chromium maps `evil.test` to 127.0.0.1 (a host-resolver rule), so a page served from `http://evil.test:PORT`
is a different site from lokal, and `http://evil.test:LOKAL_PORT` is what a rebound name looks like to lokal.
Each attack is checked on the server's side too: the request arrived (its route counted a 403) and changed
nothing.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium

pytestmark = needs_chromium

EVIL_PAGE = b"<!doctype html><title>evil</title><p>nothing to see</p>"


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("front-door-browser")
    write_catalog(home, [tiny_entry("victim", tiny_gguf, ["general"])])
    with LokalServer(home, args=["--model", "victim"]) as srv:  # no key: the default for a local server
        yield srv


@pytest.fixture(scope="module")
def evil_origin() -> Iterator[str]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(EVIL_PAGE)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://evil.test:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1"]
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def _refused(server: LokalServer, route: str) -> int:
    """How many requests to `route` (a template) the server answered with 403."""
    text = httpx.get(server.url + "/metrics").text
    pattern = rf'lokal_requests_total{{endpoint="{re.escape(route)}",method="\w+",status="403"}} (\S+)'
    return int(sum(float(m) for m in re.findall(pattern, text)))


def _loaded(server: LokalServer) -> list[str]:
    return [m["alias"] for m in httpx.get(server.url + "/lokal/ps").json()["models"]]


def test_a_foreign_page_cannot_drive_lokal(page: Page, server: LokalServer, evil_origin: str) -> None:
    page.goto(evil_origin + "/")
    target = server.url
    # The attacks that worked before: no-cors "simple" requests (text/plain bodies, no preflight) and
    # state-changing GETs from an <img>.
    page.evaluate(
        """async (target) => {
            const post = (path, body) => fetch(target + path, {method: "POST", mode: "no-cors",
                headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body)}).catch(() => null);
            await post("/openai/download", {model: "victim"});
            await post("/lokal/models/victim/load", {});
            await post("/v1/chat/completions", {model: "victim", messages: [{role: "user", content: "hi"}]});
            await new Promise((done) => { const img = new Image(); img.onload = img.onerror = done;
                                          img.src = target + "/openai/load/victim"; });
        }""",
        target,
    )
    assert _loaded(server) == []  # nothing was loaded, and no chat ran
    assert _refused(server, "/openai/download") >= 1
    assert _refused(server, "/lokal/models/{name:path}/load") >= 1
    assert _refused(server, "/v1/chat/completions") >= 1
    assert _refused(server, "/openai/load/{name}") >= 1
    # The same load by a non-browser client works: the refusal was the policy, not a broken route.
    assert httpx.post(server.url + "/lokal/models/victim/load").status_code == 200
    assert _loaded(server) == ["victim"]
    assert httpx.post(server.url + "/lokal/models/victim/unload").json() == {"unloaded": True}


def test_a_foreign_page_cannot_read_the_api(page: Page, server: LokalServer, evil_origin: str) -> None:
    page.goto(evil_origin + "/")
    outcome = page.evaluate(
        "async (url) => { try { const r = await fetch(url); return 'read ' + r.status; }"
        " catch (e) { return 'blocked'; } }",
        server.base_url + "/models",
    )
    assert outcome == "blocked"  # no CORS header for a foreign origin


def test_dns_rebinding_is_refused(page: Page, server: LokalServer) -> None:
    rebound = f"http://evil.test:{server.port}"
    resp = page.goto(rebound + "/v1/models")
    assert resp is not None and resp.status == 403
    assert "host_not_allowed" in (page.content())
    # A script on the rebound origin is "same-origin" with the server as far as the browser knows.
    status = page.evaluate(
        """async () => (await fetch("/v1/chat/completions", {method: "POST",
              headers: {"Content-Type": "application/json"},
              body: JSON.stringify({model: "victim", messages: [{role: "user", content: "hi"}]})})).status"""
    )
    assert status == 403
    assert _loaded(server) == []


def test_the_playground_still_works_on_its_own_origin(page: Page, server: LokalServer) -> None:
    page.goto(server.url + "/")
    status = page.evaluate(
        """async () => (await fetch("/v1/chat/completions", {method: "POST",
              headers: {"Content-Type": "application/json"},
              body: JSON.stringify({model: "victim", max_tokens: 2,
                                    messages: [{role: "user", content: "hi"}]})})).status"""
    )
    assert status == 200
    httpx.post(server.url + "/lokal/models/victim/unload", params={"force": "true"})
