"""A server on a base install (llama.cpp not installed): /v1/models says which engine serves each model and why,
and a chat with a model that only has GGUF builds answers engine_unavailable with the command to install it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from lokal.config import Settings
from lokal.runtime import engines
from lokal.runtime.engines import LLAMACPP_INSTALL
from lokal.server.app import build_services, create_app
from tests.support.models import write_catalog
from tests.support.server import run_app


@pytest.fixture
def base_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    real = engines.module_present
    monkeypatch.setattr(engines, "module_present", lambda module: module != "llama_cpp" and real(module))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")  # never loaded: the engine is refused before
    onnx = tmp_path / "m-onnx"
    onnx.mkdir()
    home = tmp_path / "home"
    write_catalog(home, [
        {"alias": "gguf-only", "variants": [{"id": "gguf-only-cpu:1", "path": str(gguf)}]},
        {"alias": "both", "variants": [{"id": "both-q4-cpu:1", "path": str(gguf)},
                                       {"id": "both-int4-onnx-cpu:1", "engine": "onnx", "path": str(onnx)}]},
    ])  # fmt: skip
    settings = Settings(home=home, offline=True, device="cpu")  # type: ignore[call-arg]
    with run_app(create_app(settings, services=build_services(settings))) as url:
        yield url


def test_models_say_which_engine_and_why(base_url: str) -> None:
    data = httpx.get(f"{base_url}/v1/models").json()["data"]
    cards = {c["id"]: c for c in data}
    both, only = cards["both"], cards["gguf-only"]
    assert (both["object"], both["owned_by"]) == ("model", "unknown")  # the OpenAI shape is unchanged
    assert (both["lokal"]["variant"], both["lokal"]["engine"]) == ("both-int4-onnx-cpu:1", "onnx")
    assert both["lokal"]["engine_installed"] is True and LLAMACPP_INSTALL in both["lokal"]["why"]
    assert both["lokal"]["why"].startswith("cpu; engine onnx (llama-cpp-python is not installed")
    assert (only["lokal"]["engine"], only["lokal"]["engine_installed"]) == ("llamacpp", False)
    card = httpx.get(f"{base_url}/v1/models/gguf-only").json()
    assert card["lokal"]["why"] == only["lokal"]["why"]
    # Foundry's list puts the variant that resolution picks first, as the SDK takes the first entry.
    listed = [e["name"] for e in httpx.get(f"{base_url}/foundry/list").json() if e["alias"] == "both"]
    assert listed[0] == "both-int4-onnx-cpu:1"


def test_chat_with_a_gguf_only_model_names_the_install_command(closing: contextlib.ExitStack, base_url: str) -> None:
    client = closing.enter_context(openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0))
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gguf-only", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 501
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "engine_unavailable"
    assert LLAMACPP_INSTALL in body["message"] and "gguf-only" in body["message"]
