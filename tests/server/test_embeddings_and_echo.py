"""Embeddings under a burst of concurrent requests, `dimensions`, and completions' `echo`, on the session's real
server (the tiny GGUF and the MiniLM embedder)."""

from __future__ import annotations

import concurrent.futures as cf
from contextlib import ExitStack

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.server import LokalServer


def _client(server: LokalServer, closing: ExitStack) -> OpenAI:
    return closing.enter_context(OpenAI(base_url=server.base_url, api_key="lokal", max_retries=0, timeout=30))


def test_concurrent_embeddings_all_succeed(lokal_server: LokalServer) -> None:
    texts = [f"sentence number {i} about cats and dogs" for i in range(3)]

    def embed(i: int) -> httpx.Response:
        body = {"model": "all-minilm-l6-v2", "input": texts[: 1 + i % 3],
                "encoding_format": "base64" if i % 2 else "float"}
        return httpx.post(lokal_server.base_url + "/embeddings", json=body, timeout=60)

    assert embed(0).status_code == 200  # loaded before the burst
    with cf.ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            results = list(pool.map(embed, range(16)))
            assert [r.status_code for r in results] == [200] * 16, [r.text for r in results if r.status_code != 200]
    usage = results[2].json()["usage"]
    assert usage["prompt_tokens"] > 3 * 7  # counted by the model's tokenizer (CLS, SEP), not by whitespace


def test_completions_echo_prepends_the_prompt(lokal_server: LokalServer, closing: ExitStack) -> None:
    client = _client(lokal_server, closing)
    prompt = "Once upon a time"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=5, echo=True, temperature=0)
    plain = client.completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0)
    assert r.choices[0].text == prompt + plain.choices[0].text
    chunks = [c.choices[0].text for c in client.completions.create(
        model="tiny", prompt=prompt, max_tokens=5, echo=True, temperature=0, stream=True) if c.choices]
    assert chunks[0] == prompt
    assert "".join(chunks) == r.choices[0].text


def test_embeddings_dimensions_only_the_native_size(lokal_server: LokalServer, closing: ExitStack) -> None:
    client = _client(lokal_server, closing)
    r = client.embeddings.create(model="all-minilm-l6-v2", input="hello", dimensions=384)
    assert len(r.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="all-minilm-l6-v2", input="hello", dimensions=128)
    err = info.value
    assert err.param == "dimensions" and "384" in err.message
    assert isinstance(err.body, dict) and err.body["type"] == "invalid_request_error"
