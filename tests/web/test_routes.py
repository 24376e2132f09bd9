"""The playground is served by the app itself: page, assets and module graph, and the auth exemption."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lokal.config import get_settings
from lokal.server.app import create_app
from lokal.web.routes import STATIC_DIR


@pytest.fixture
def client(lokal_home: Path) -> Iterator[TestClient]:
    yield TestClient(create_app(get_settings()), base_url="http://127.0.0.1")


@pytest.fixture
def keyed_client(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("LOKAL_API_KEY", "sesame")
    get_settings.cache_clear()
    yield TestClient(create_app(get_settings()), base_url="http://127.0.0.1")


def _local_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


def _imports(js: str) -> list[str]:
    return re.findall(r'^import .* from "(\./[^"]+)";', js, flags=re.MULTILINE)


def test_root_serves_the_page_with_its_module(client: TestClient) -> None:
    res = client.get("/")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert res.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/js/main.js"></script>' in res.text
    assert 'id="model-a"' in res.text and 'id="chart"' in res.text


def test_every_asset_and_module_import_resolves(client: TestClient) -> None:
    """Walks the module graph from index.html as the browser would; a broken import path fails here."""
    html = client.get("/").text
    pending = _local_refs(html)
    assert "/static/app.css" in pending
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        res = client.get(url)
        assert res.status_code == 200, url
        if url.endswith(".js"):
            assert "javascript" in res.headers["content-type"], url
            base = url.rsplit("/", 1)[0]
            pending += [f"{base}/{spec[2:]}" for spec in _imports(res.text)]
        elif url.endswith(".css"):
            assert res.headers["content-type"].startswith("text/css")
    # The vendored runtime is imported on demand (browser.js), not in the static graph.
    shipped = {f"/static/{p.relative_to(STATIC_DIR).as_posix()}" for p in (STATIC_DIR / "js").rglob("*.js")}
    assert shipped <= seen, f"modules shipped but never imported: {shipped - seen}"
    browser = client.get("/static/js/browser.js").text
    assert 'const VENDOR = "/static/vendor/";' in browser and "transformers.min.js" in browser
    assert client.get("/static/vendor/transformers.min.js").headers["content-type"].startswith("text/javascript")


def test_page_references_nothing_off_the_machine() -> None:
    """The page must work offline: no CDN, no remote fonts, no absolute URLs to other hosts."""
    for path in STATIC_DIR.rglob("*"):
        # The vendored transformers.js names the hub and a CDN as defaults; browser.js turns both off
        # (allowRemoteModels, wasmPaths) and the in-browser tests fail on any request off the machine.
        if path.suffix in {".html", ".js", ".css"} and "vendor" not in path.relative_to(STATIC_DIR).parts:
            text = path.read_text()
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path


def test_unknown_asset_is_404(client: TestClient) -> None:
    assert client.get("/static/js/nope.js").status_code == 404


def test_page_and_assets_stay_open_when_an_api_key_is_set(keyed_client: TestClient) -> None:
    assert keyed_client.get("/").status_code == 200
    assert keyed_client.get("/static/js/main.js").status_code == 200
    assert keyed_client.get("/favicon.ico").status_code == 200
    denied = keyed_client.get("/v1/models")
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    allowed = keyed_client.get("/v1/models", headers={"Authorization": "Bearer sesame"})
    assert allowed.status_code == 200
