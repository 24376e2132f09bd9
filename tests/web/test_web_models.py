"""The web-model file route, in process: what the page's transformers.js may fetch, and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from lokal.config import get_settings
from lokal.server.app import create_app
from lokal.web.routes import KEY_COOKIE, STATIC_DIR
from tests.catalog.fileserver import FileServer

GRAPH = bytes(range(256)) * 40  # stands in for onnx/model.onnx: 10 KiB the route serves as bytes


def _home(home: Path) -> Path:
    folder = home / "models" / "synthetic" / "w" / "web"
    (folder / "onnx").mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text(json.dumps({"name": name}))
    (folder / "onnx" / "model.onnx").write_bytes(GRAPH)
    (home / "secret.txt").write_text("outside the models folder")
    outside = home.parent / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (folder / "escape.json").symlink_to(home / "secret.txt")
    entries = [
        {"alias": "w", "variants": [{"id": "w-webgpu:1", "device": "webgpu", "engine": "web", "path": str(folder)}]},
        {
            "alias": "out",
            "variants": [{"id": "out-webgpu:1", "device": "webgpu", "engine": "web", "path": str(outside)}],
        },
    ]
    (home / "catalog.yaml").write_text(yaml.safe_dump({"models": entries}))
    return folder


@pytest.fixture
def client(lokal_home: Path) -> Iterator[TestClient]:
    _home(lokal_home)
    yield TestClient(create_app(get_settings()), base_url="http://127.0.0.1")


def test_serves_the_folder_with_types_ranges_and_isolation(client: TestClient) -> None:
    res = client.get("/static/models/w/config.json")
    assert res.status_code == 200 and res.json() == {"name": "config.json"}
    assert res.headers["content-type"].startswith("application/json")
    assert res.headers["cross-origin-resource-policy"] == "same-origin"
    graph = client.get("/static/models/w/onnx/model.onnx")
    assert graph.content == GRAPH and graph.headers["content-type"] == "application/octet-stream"
    part = client.get("/static/models/w/onnx/model.onnx", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == GRAPH[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(GRAPH)}"
    page = client.get("/")
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    wasm = client.get("/static/vendor/ort-wasm-simd-threaded.jsep.wasm", headers={"Range": "bytes=0-3"})
    assert wasm.status_code == 206 and wasm.content == b"\0asm"
    assert wasm.headers["content-type"] == "application/wasm"
    card = client.get("/lokal/web/models/w").json()
    assert card["ready"] and card["dtypes"] == ["fp32"] and card["missing"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/static/models/w/../../secret.txt",
        "/static/models/w/%2e%2e/%2e%2e/secret.txt",
        "/static/models/w/..%2f..%2fsecret.txt",
        "/static/models/w/onnx/..%2f..%2f..%2f..%2fsecret.txt",
        "/static/models/w/%2fetc%2fpasswd",
        "/static/models/w/escape.json",  # a link out of the folder
        "/static/models/w/.hidden",
        "/static/models/w/onnx",  # a folder, not a file
        "/static/models/out/config.json",  # a web variant whose folder is outside the models folder
        "/static/models/..%2fsecret.txt/config.json",
    ],
)
def test_nothing_outside_the_cache_is_reachable(client: TestClient, path: str) -> None:
    res = client.get(path)
    assert res.status_code in (400, 404), (path, res.status_code)
    assert "outside the models folder" not in res.text


def test_a_model_without_a_web_variant_is_a_readable_404(client: TestClient) -> None:
    res = client.get("/lokal/web/models/nope")
    assert res.status_code == 404 and res.json()["error"]["code"] == "model_not_found"


def test_with_an_api_key_the_files_want_it(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _home(lokal_home)
    monkeypatch.setenv("LOKAL_API_KEY", "sesame")
    get_settings.cache_clear()
    client = TestClient(create_app(get_settings()), base_url="http://127.0.0.1")
    assert client.get("/static/models/w/config.json").status_code == 401
    client.cookies.set(KEY_COOKIE, "sesame")
    assert client.get("/static/models/w/config.json").status_code == 200
    client.cookies.set(KEY_COOKIE, "wrong")
    assert client.get("/static/models/w/config.json").status_code == 401


def test_vendored_runtime_is_pinned_and_licensed() -> None:
    vendor = STATIC_DIR / "vendor"
    versions = json.loads((vendor / "VERSIONS.json").read_text())
    lock = json.loads((Path(__file__).parents[2] / "web-vendor" / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@huggingface/transformers"]["version"]
    assert versions["@huggingface/transformers"] == pinned
    assert versions["onnxruntime-web"] == lock["packages"]["node_modules/onnxruntime-web"]["version"]
    assert {p.name for p in (vendor / "licenses").iterdir()} >= {"transformers.js-LICENSE", "onnxruntime-web-LICENSE"}
    sums = dict(reversed(line.split()) for line in (vendor / "SHA256SUMS").read_text().splitlines())
    import hashlib

    for name, digest in sums.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name


REPO = "onnx-community/Tiny-Web"


@pytest.fixture
def hub_client(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, FileServer]]:
    with FileServer() as hub:
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            hub.add_hub_file(REPO, name, json.dumps({"name": name}).encode())
        served = hub.add_hub_file(REPO, "onnx/model_q4.onnx", GRAPH)
        variant = {"id": "tiny-web-q4-webgpu:1", "device": "webgpu", "engine": "web", "repo": REPO,
                   "file": "onnx/model_q4.onnx", "sha256": served.sha256, "size_bytes": len(GRAPH)}  # fmt: skip
        bad = {**variant, "id": "bad-webgpu:1", "sha256": "0" * 64}
        lokal_home.mkdir(parents=True)
        (lokal_home / "catalog.yaml").write_text(yaml.safe_dump({"models": [
            {"alias": "hub-web", "variants": [variant]}, {"alias": "bad-web", "variants": [bad]}]}))  # fmt: skip
        monkeypatch.setenv("LOKAL_OFFLINE", "0")
        monkeypatch.setenv("LOKAL_HF_ENDPOINT", hub.url)
        get_settings.cache_clear()
        yield TestClient(create_app(get_settings()), base_url="http://127.0.0.1"), hub


def test_a_catalog_web_variant_is_pulled_file_by_file_and_served(hub_client: tuple[TestClient, FileServer]) -> None:
    client, hub = hub_client
    before = client.get("/lokal/web/models/hub-web").json()
    assert not before["ready"] and before["downloadable"]
    card = client.post("/lokal/web/models/hub-web/pull").json()
    assert card["ready"] and card["dtypes"] == ["q4"] and card["missing"] == []
    assert client.get("/static/models/hub-web/onnx/model_q4.onnx").content == GRAPH
    assert client.get("/static/models/hub-web/tokenizer.json").json() == {"name": "tokenizer.json"}
    graph_gets = len(hub.gets(f"/{REPO}/resolve/main/onnx/model_q4.onnx"))
    client.post("/lokal/web/models/hub-web/pull")  # present: nothing is fetched again
    assert len(hub.gets(f"/{REPO}/resolve/main/onnx/model_q4.onnx")) == graph_gets == 1

    refused = client.post("/lokal/web/models/bad-web/pull")  # the graph's sha256 does not match the catalog's
    assert refused.status_code >= 400 and "sha256" in refused.text.lower()
    assert not client.get("/lokal/web/models/bad-web").json()["ready"]
