"""A bad user catalog entry, at start-up or after a hot reload, costs only itself: every listing still answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from lokal.config import get_settings
from lokal.server.app import create_app
from tests.foundry.conftest import TINY_ID, Files, FoundryHome, foundry_entries, foundry_home

BAD = {"alias": "bad", "variants": [{"id": "bad-cpu:1", "url": "http://h/x/.."}]}


@pytest.fixture
def env(tmp_path: Path, tiny_gguf: Path, files: Files, foundry_bin: Path) -> Iterator[FoundryHome]:
    with foundry_home(tmp_path, tiny_gguf, files, foundry_bin) as home:
        yield home


def _write(env: FoundryHome, entries: list[dict[str, object]]) -> None:
    (env.home / "catalog.yaml").write_text(yaml.safe_dump({"models": entries}, sort_keys=False))


def _listings_answer(client: TestClient) -> None:
    for route in ("/v1/models", "/foundry/list", "/openai/models"):
        r = client.get(route)
        assert r.status_code == 200, (route, r.text)
        assert "bad-cpu:1" not in r.text and "bad" not in [m.get("id") for m in r.json() if isinstance(m, dict)]
    assert TINY_ID in client.get("/openai/models").json()
    assert "tiny" in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_bad_entry_at_start_up_is_skipped(env: FoundryHome, tiny_gguf: Path, files: Files) -> None:
    _write(env, [*foundry_entries(tiny_gguf, files), BAD])
    with TestClient(create_app(get_settings()), base_url="http://127.0.0.1") as client:
        _listings_answer(client)
        assert client.get("/v1/models/bad").status_code == 404


def test_bad_entry_after_a_hot_reload_is_skipped(env: FoundryHome, tiny_gguf: Path, files: Files) -> None:
    with TestClient(create_app(get_settings()), base_url="http://127.0.0.1") as client:
        _listings_answer(client)
        _write(env, [*foundry_entries(tiny_gguf, files), BAD])
        _listings_answer(client)
        (env.home / "catalog.yaml").write_text("models: [\n")  # a syntax error keeps the last good entries
        _listings_answer(client)
