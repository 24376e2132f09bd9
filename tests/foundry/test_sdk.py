"""Foundry Local's own Python SDK (foundry-local-sdk 0.5.1), unchanged, against lokal: the workshop's code path.

The SDK shells out to `foundry` on PATH to find and start the service, then uses /foundry and /openai routes;
chat goes through the official openai client at `manager.endpoint`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from foundry_local import FoundryLocalManager
from foundry_local.client import HttpxClient
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from lokal.foundry import service
from tests.foundry.conftest import (
    BAD_SHA_ID,
    BLOB_ID,
    DL_CPU_ID,
    DL_GPU_ID,
    TINY_ID,
    Files,
    FoundryHome,
    foundry_home,
)

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, files: Files, foundry_bin: Path
        ) -> Iterator[FoundryHome]:  # fmt: skip
    with foundry_home(tmp_path_factory.mktemp("sdk"), tiny_gguf, files, foundry_bin) as home:
        yield home


@pytest.fixture(scope="module")
def sdk_clients() -> Iterator[None]:
    """The SDK makes an httpx client each time it finds the service and never closes one: they are closed here,
    or their sockets surface as ResourceWarnings in whichever later test the garbage collector runs in."""
    made: list[HttpxClient] = []
    init = HttpxClient.__init__

    def tracked(self: HttpxClient, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HttpxClient, "__init__", tracked)
        yield
    for client in made:
        client._client.close()


@pytest.fixture(scope="module")
def manager(env: FoundryHome, sdk_clients: None) -> FoundryLocalManager:
    """`FoundryLocalManager(alias)` from nothing: starts the service, downloads the model, loads it."""
    assert service.status(env.settings) is None
    return FoundryLocalManager("tiny-dl")


def test_bootstrap_starts_downloads_and_loads(manager: FoundryLocalManager, env: FoundryHome) -> None:
    assert manager.endpoint == f"{env.url}/v1"
    assert manager.is_service_running()
    assert [m.id for m in manager.list_loaded_models()] == [DL_CPU_ID]
    assert DL_CPU_ID in [m.id for m in manager.list_cached_models()]
    cached = Path(manager.get_cache_location()) / "tiny-dl-generic-cpu" / "1" / "tiny.gguf"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == env.files.tiny_sha256
    assert manager.get_cache_location() == str(env.home / "models")


def test_catalog_and_model_info(manager: FoundryLocalManager) -> None:
    catalog = manager.list_catalog_models()
    assert {TINY_ID, DL_CPU_ID, DL_GPU_ID, BLOB_ID} <= {m.id for m in catalog}
    info = manager.get_model_info("tiny-dl")
    assert info is not None and info.id == DL_CPU_ID and info.device_type == "CPU"  # CPU-only machine
    prefixed = manager.get_model_info("tiny-dl-generic-gpu")  # id without version: highest version
    assert prefixed is not None and prefixed.id == DL_GPU_ID
    exact = manager.get_model_info(TINY_ID)
    assert exact is not None and exact.alias == "tiny" and exact.prompt_template is not None
    assert manager.get_model_info("no-such-model") is None
    with pytest.raises(ValueError, match="not found in the catalog"):
        manager.get_model_info("no-such-model", raise_on_not_found=True)


def test_chat_through_openai_client(manager: FoundryLocalManager) -> None:
    info = manager.get_model_info("tiny-dl")  # the id the SDK hands back, "<name>:<version>"
    assert info is not None
    with OpenAI(base_url=manager.endpoint, api_key=manager.api_key, max_retries=0) as client:
        r = client.chat.completions.create(model=info.id, messages=USER, max_tokens=6, temperature=0)
        assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens > 0
        assert r.choices[0].finish_reason in {"stop", "length"}

        stream = client.chat.completions.create(model="tiny-dl", messages=USER, max_tokens=6, stream=True)
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces)


def test_load_with_ttl_list_and_unload(manager: FoundryLocalManager, env: FoundryHome) -> None:
    info = manager.load_model("tiny", ttl=77)
    assert info.id == TINY_ID
    assert TINY_ID in [m.id for m in manager.list_loaded_models()]
    ps = {m["id"]: m for m in httpx.get(env.url + "/lokal/ps").json()["models"]}
    assert 60 < ps[TINY_ID]["ttl_left"] <= 77
    manager.unload_model("tiny")
    assert TINY_ID not in [m.id for m in manager.list_loaded_models()]
    manager.unload_model("tiny")  # not loaded: a no-op, as in Foundry Local


def test_download_model_reports_progress_and_success(
    manager: FoundryLocalManager, env: FoundryHome, capfd: pytest.CaptureFixture[str]
) -> None:
    sdk_log = logging.getLogger("foundry_local")
    level = sdk_log.level
    sdk_log.setLevel(logging.INFO)  # the SDK draws its tqdm bar from our "NN.N%" lines only at INFO
    try:
        info = manager.download_model("blob")
    finally:
        sdk_log.setLevel(level)
    assert info.id == BLOB_ID
    assert BLOB_ID in [m.id for m in manager.list_cached_models()]
    assert "100.0/100.0" in capfd.readouterr().err  # the bar reached the end


def test_failures_keep_their_foundry_meaning(manager: FoundryLocalManager, env: FoundryHome) -> None:
    with pytest.raises(ValueError, match="not found in the catalog"):
        manager.download_model("no-such-model")
    with pytest.raises(ValueError, match="has not been downloaded yet"):
        manager.load_model("bad-sha")
    with pytest.raises(RuntimeError, match="Failed to download model with error: .*sha256"):
        manager.download_model("bad-sha")
    leftovers = [p for p in (env.home / "models" / "bad-sha-generic-cpu").rglob("*") if p.is_file()]
    assert [p for p in leftovers if not p.name.endswith(".lock")] == []
    assert BAD_SHA_ID not in [m.id for m in manager.list_cached_models()]
