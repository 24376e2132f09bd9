"""A real third-party upstream: llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`, the same
compiled library lokal uses) on the tiny GGUF, behind `lokal serve` as a remote pool with one dead replica.
What comes back through lokal equals what the server answers direct, streamed and not."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.support.models import write_catalog
from tests.support.server import LokalServer, free_port, spawn_logged

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("starlette_context") is None,
    reason="needs llama-cpp-python and its server extra's dependencies",
)
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-cpp-server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf), "--host", "127.0.0.1"]
    proc = spawn_logged([*cmd, "--port", str(port), "--n_ctx", "512"], log)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "llama_cpp.server exited"
            try:
                if httpx.get(base + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def front(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("front-home")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    variant = {
        "id": "llamacpp-server-remote:1",
        "engine": "remote",
        "base_url": dead,  # tried first (round-robin starts here), refused, retried on the real one
        "replicas": [llama_server],
        "upstream_model": "tiny",
        "health_check_s": 0,
    }
    write_catalog(home, [{"alias": "far", "context_length": 512, "variants": [variant]}])
    with LokalServer(home, args=["--model", "far"]) as server:
        yield server


def test_chat_through_lokal_equals_direct(closing: contextlib.ExitStack, llama_server: str, front: LokalServer) -> None:
    direct = closing.enter_context(OpenAI(base_url=llama_server, api_key="x", max_retries=0))
    via = closing.enter_context(OpenAI(base_url=front.base_url, api_key="x", max_retries=0))
    want = direct.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    text = want.choices[0].message.content
    assert text
    got = via.chat.completions.create(model="far", messages=MESSAGES, max_tokens=12, temperature=0)
    assert got.choices[0].message.content == text
    assert got.usage is not None and got.usage.completion_tokens > 0
    chunks = list(
        via.chat.completions.create(model="far", messages=MESSAGES, max_tokens=12, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # token by token, not one lump
    direct_stream = direct.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in direct_stream if c.choices) == text

    (model,) = httpx.get(front.url + "/lokal/ps", timeout=10).json()["models"]
    dead, real = model["replicas"]
    assert dead["failures"] >= 1  # the first request went there (round-robin start) and was retried
    assert real["requests"] >= 2 and real["failures"] == 0
