"""Foundry Local's REST routes in process: shapes checked with the SDK's own pydantic models."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from foundry_local.models import FoundryListResponseModel, FoundryModelInfo

from lokal.catalog.cache import Cache
from lokal.catalog.spec import Variant
from lokal.config import get_settings
from lokal.foundry.routes import NOT_DOWNLOADED_PHRASE
from lokal.runtime import engines
from lokal.server.app import create_app
from tests.foundry.conftest import (
    BAD_SHA_ID,
    BLOB_ID,
    DL_CPU_ID,
    DL_GPU_ID,
    GONE_ID,
    TINY_ID,
    Files,
    FoundryHome,
    foundry_home,
)

_PCT = re.compile(r"(\d+(?:\.\d+)?)%")  # the SDK's progress pattern (foundry_local/client.py)


@pytest.fixture
def env(tmp_path: Path, tiny_gguf: Path, files: Files, foundry_bin: Path) -> Iterator[FoundryHome]:
    with foundry_home(tmp_path, tiny_gguf, files, foundry_bin) as home:
        yield home


@pytest.fixture
def client(env: FoundryHome) -> Iterator[TestClient]:
    with TestClient(create_app(get_settings()), base_url="http://127.0.0.1") as c:
        yield c


def _entries(client: TestClient) -> list[dict[str, Any]]:
    r = client.get("/foundry/list")
    assert r.status_code == 200
    data: list[dict[str, Any]] = r.json()
    return data


def _download(client: TestClient, name: str) -> tuple[list[str], dict[str, Any]]:
    body = {"model": {"Name": name, "Uri": "ignored", "Publisher": "x", "ProviderType": "Url",
                      "PromptTemplate": None}, "token": None, "IgnorePipeReport": True}  # fmt: skip
    lines: list[str] = []
    with client.stream("POST", "/openai/download", json=body) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.strip()]
    assert lines[-1].startswith("{"), lines
    return lines[:-1], json.loads(lines[-1])


def test_list_entries_pass_the_sdk_validation(client: TestClient, tiny_gguf: Path) -> None:
    entries = _entries(client)
    infos = [FoundryModelInfo.from_list_response(FoundryListResponseModel.model_validate(e)) for e in entries]
    by_id = {i.id: i for i in infos}
    assert {TINY_ID, DL_CPU_ID, DL_GPU_ID, BLOB_ID}.issubset(by_id)

    tiny = next(e for e in entries if e["name"] == TINY_ID)
    assert tiny["alias"] == "tiny" and tiny["version"] == "1" and tiny["task"] == "chat-completion"
    assert tiny["promptTemplate"]["prompt"].startswith("<|im_start|>user\n{Content}")
    assert tiny["supportsToolCalling"] is True
    assert tiny["uri"] == tiny_gguf.absolute().as_uri() and tiny["modelType"] == "GGUF"
    assert by_id[DL_GPU_ID].device_type == "GPU" and by_id[DL_GPU_ID].execution_provider == "CUDAExecutionProvider"
    assert by_id[DL_GPU_ID].version == "2"
    dl = next(e for e in entries if e["name"] == DL_CPU_ID)
    assert dl["runtime"] == {"deviceType": "CPU", "executionProvider": "CPUExecutionProvider"}
    assert dl["maxOutputTokens"] == 256 and dl["promptTemplate"]["user"] == "<|user|>\n{Content}<|end|>"
    blob = next(e for e in entries if e["name"] == BLOB_ID)
    assert blob["fileSizeMb"] == 3 and blob["promptTemplate"] is None


def test_alias_order_prefers_this_machines_device(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [e["name"] for e in _entries(client) if e["alias"] == "tiny-dl"]
    assert names == [DL_CPU_ID, DL_GPU_ID]  # LOKAL_DEVICE=cpu: the GPU variant, first in the file, goes last

    monkeypatch.setenv("LOKAL_DEVICE", "cuda")
    monkeypatch.setattr(engines, "llama_cpp_offloads", lambda: True)  # a CUDA build of llama-cpp-python
    get_settings.cache_clear()
    with TestClient(create_app(get_settings()), base_url="http://127.0.0.1") as gpu:
        names = [e["name"] for e in _entries(gpu) if e["alias"] == "tiny-dl"]
    assert names == [DL_GPU_ID, DL_CPU_ID]


def test_status_and_cached_models(client: TestClient, env: FoundryHome) -> None:
    status = client.get("/openai/status").json()
    assert status["modelDirPath"] == str(env.home / "models")
    assert status["endpoints"] == ["http://127.0.0.1"]
    cached = client.get("/openai/models").json()
    assert TINY_ID in cached
    assert DL_CPU_ID not in cached and BLOB_ID not in cached


def test_load_of_a_model_not_downloaded_uses_foundrys_phrase(client: TestClient) -> None:
    r = client.get(f"/openai/load/{DL_CPU_ID}", params={"ttl": 60})
    assert r.status_code == 404
    assert NOT_DOWNLOADED_PHRASE in r.text and DL_CPU_ID in r.text
    assert client.get("/openai/loadedmodels").json() == []


def test_load_with_ttl_then_unload(client: TestClient) -> None:
    r = client.get(f"/openai/load/{TINY_ID}", params={"ttl": 123, "ep": "cpu"})
    assert r.status_code == 200, r.text
    assert client.get("/openai/loadedmodels").json() == [TINY_ID]
    ttl_left = client.get("/lokal/ps").json()["models"][0]["ttl_left"]
    assert 100 < ttl_left <= 123
    assert client.get(f"/openai/unload/{TINY_ID}", params={"force": "true"}).json() == {"unloaded": True}
    assert client.get("/openai/loadedmodels").json() == []
    client.get("/openai/load/tiny")  # by alias
    assert client.get("/openai/unloadall").json() == {"unloaded": [TINY_ID]}


def test_download_streams_percentages_then_success(client: TestClient, env: FoundryHome, files: Files) -> None:
    progress, outcome = _download(client, BLOB_ID)
    assert outcome == {"success": True, "errorMessage": None}
    percents = [float(m.group(1)) for line in progress if (m := _PCT.search(line))]
    assert percents[0] == 0.0 and percents[-1] == 100.0
    assert percents == sorted(percents)
    assert any(0 < p < 100 for p in percents), progress  # the blob arrives in steps: progress in between
    path = Cache(env.settings).managed_path(Variant(id=BLOB_ID, url=f"{files.url}/models/blob.gguf"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == files.blob_sha256
    assert BLOB_ID in client.get("/openai/models").json()
    # Asked again, it is already there: success without a transfer.
    again, outcome = _download(client, BLOB_ID)
    assert outcome["success"] is True and "already" in again[-1]


def _variant_files(env: FoundryHome, variant_id: str) -> list[Path]:
    folder = env.home / "models" / variant_id.split(":")[0]
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_download_checksum_failure_leaves_nothing(client: TestClient, env: FoundryHome) -> None:
    _, outcome = _download(client, BAD_SHA_ID)
    assert outcome["success"] is False
    assert "sha256" in outcome["errorMessage"] and BAD_SHA_ID in outcome["errorMessage"]
    assert _variant_files(env, BAD_SHA_ID) == []  # neither the file nor a .part
    assert BAD_SHA_ID not in client.get("/openai/models").json()


def test_download_http_failure_is_readable(client: TestClient, env: FoundryHome) -> None:
    _, outcome = _download(client, GONE_ID)
    assert outcome["success"] is False and "404" in outcome["errorMessage"]
    assert _variant_files(env, GONE_ID) == []


def test_download_of_unknown_model_or_bad_body(client: TestClient) -> None:
    r = client.post("/openai/download", json={"model": {"Name": "no-such-model"}})
    assert r.status_code == 404
    assert r.json()["success"] is False and "no-such-model" in r.json()["errorMessage"]
    r = client.post("/openai/download", json={"token": None})
    assert r.status_code == 400 and r.json()["success"] is False
    r = client.post("/openai/download", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed" in r.json()["errorMessage"]
    r = client.post("/openai/download", content=b'{"model": "no-such-model"}')  # no Content-Type: a CSRF shape
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
