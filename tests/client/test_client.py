"""lokal.Client: the public names, a light import, and the same calls in process and over HTTP on the tiny
model (greedy, so both transports must give the same text) and the packaged MiniLM."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lokal
from lokal import Client, InvalidRequest, ModelNotDownloaded, ModelNotFound, Settings, UpstreamError
from lokal.client import server_root
from lokal.config import get_settings
from tests.support.models import standard_entries, write_catalog
from tests.support.server import LokalServer, free_port

SAY = [{"role": "user", "content": "Say something."}]
GREEDY = {"max_tokens": 12, "temperature": 0}
EMBEDDER = "all-minilm-l6-v2"
TEXTS = ["local models on a laptop", "running language models locally", "a cat asleep on a mat"]


def test_every_public_name_imports() -> None:
    assert lokal.__all__ == sorted(lokal.__all__)
    for name in lokal.__all__:
        assert getattr(lokal, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from lokal import *", namespace)
    assert set(lokal.__all__) <= namespace.keys()
    assert issubclass(lokal.ModelNotDownloaded, lokal.LokalError)


def test_importing_lokal_loads_no_engine_server_or_http_client() -> None:
    code = (
        "import sys, lokal\n"
        "heavy = {'torch', 'llama_cpp', 'fastapi', 'starlette', 'uvicorn', 'httpx', 'openai', 'numpy',\n"
        "         'onnxruntime_genai', 'sentence_transformers'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def local(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """In process, on a home whose catalog is the server fixture's (the same GGUF under the same aliases)."""
    home = tmp_path_factory.mktemp("client-home")
    write_catalog(home, standard_entries(tiny_gguf))
    with Client.local(Settings(home=home, offline=True, device="cpu")) as client:
        yield client


@pytest.fixture(scope="module")
def remote(lokal_server: LokalServer) -> Iterator[Client]:
    with Client.connect(lokal_server.base_url) as client:  # given with its /v1: the root is found
        yield client


@pytest.fixture(params=["local", "remote"])
def client(request: pytest.FixtureRequest) -> Client:
    found: Client = request.getfixturevalue(request.param)
    return found


def test_chat_is_greedy_and_stream_writes_the_same_text(client: Client) -> None:
    text = client.chat("tiny", SAY, **GREEDY)
    assert text and text == client.chat("tiny", SAY, **GREEDY)
    pieces = list(client.stream("tiny", SAY, **GREEDY))
    assert len(pieces) > 1 and "".join(pieces) == text
    assert client.chat("tiny", "Say something.", **GREEDY) == text  # a str is one user message


def test_both_transports_give_the_same_answer(local: Client, remote: Client) -> None:
    assert local.chat("tiny", SAY, **GREEDY) == remote.chat("tiny", SAY, **GREEDY)
    assert local.chat("tiny-coder", SAY, max_tokens=5, temperature=0, seed=3) == remote.chat(
        "tiny-coder", SAY, max_tokens=5, temperature=0, seed=3
    )
    assert local.model("tiny") == remote.model("tiny")


def test_embed_gives_unit_vectors_that_rank_by_meaning(client: Client) -> None:
    vectors = client.embed(EMBEDDER, TEXTS)
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-3 for v in vectors)
    near, far = (sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:])
    assert near > far
    (single,) = client.embed(EMBEDDER, TEXTS[0])  # a str is one text
    assert math.isclose(sum(a * b for a, b in zip(single, vectors[0], strict=True)), 1.0, rel_tol=1e-5)


def test_embeddings_agree_across_transports(local: Client, remote: Client) -> None:
    for a, b in zip(local.embed(EMBEDDER, TEXTS), remote.embed(EMBEDDER, TEXTS), strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


def test_models_list_what_can_answer(client: Client) -> None:
    listed = {m.id: m for m in client.models()}
    assert listed["tiny"].synthetic and listed["tiny"].task == "chat-completion" and listed["tiny"].cached
    assert listed[EMBEDDER].task == "embeddings" and not listed[EMBEDDER].synthetic
    assert "qwen2.5-0.5b" not in listed  # in the catalog, not downloaded
    every = {m.id: m for m in client.models(include_all=True)}
    assert not every["qwen2.5-0.5b"].cached and every["qwen2.5-0.5b"].variant
    assert client.model("tiny-cpu:1").id == "tiny"


def test_the_same_errors_on_both_transports(client: Client) -> None:
    with pytest.raises(ModelNotDownloaded, match="lokal model download qwen2.5-0.5b"):
        client.chat("qwen2.5-0.5b", SAY, max_tokens=2)
    with pytest.raises(ModelNotFound):
        client.chat("no-such-model", SAY)
    with pytest.raises(InvalidRequest, match="embeddings model"):
        client.chat(EMBEDDER, SAY)
    with pytest.raises(InvalidRequest, match="not an embeddings model"):
        client.embed("tiny", ["x"])
    with pytest.raises(InvalidRequest) as bad:
        client.chat("tiny", SAY, temperature=5)
    assert bad.value.param == "temperature"
    with pytest.raises(InvalidRequest, match="tools is not a Client option"):
        client.chat("tiny", SAY, tools=[])


def test_a_server_that_is_not_there_is_an_upstream_error() -> None:
    with Client.connect(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(UpstreamError, match="no lokal"):
        client.chat("tiny", SAY)


def test_server_root_precedence(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOKAL_BASE_URL", raising=False)
    monkeypatch.setenv("LOKAL_PORT", "5391")
    get_settings.cache_clear()
    assert server_root() == "http://127.0.0.1:5391"
    monkeypatch.setenv("LOKAL_BASE_URL", "http://10.0.0.2:9000/v1/")
    assert server_root() == "http://10.0.0.2:9000"
    assert server_root("http://h:1/v1") == "http://h:1"
