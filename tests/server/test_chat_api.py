"""The OpenAI API of a real `lokal serve` on the tiny model, through the official openai client."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.support.server import LokalServer

USER = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def client(lokal_server: LokalServer) -> OpenAI:
    return OpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0)


def _prompt_tokens(gguf: Path, text: str) -> int:
    from llama_cpp import Llama

    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    return len(llm.tokenize(text.encode(), add_bos=True, special=True))


def test_non_streaming_chat_counts_tokens_like_the_tokenizer(client: OpenAI, tiny_gguf: Path) -> None:
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == "tiny-cpu:1"
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage is not None
    assert r.usage.completion_tokens == 12
    expected = _prompt_tokens(tiny_gguf, "<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n")
    assert r.usage.prompt_tokens == expected
    assert r.usage.total_tokens == expected + 12


def test_streaming_matches_non_streaming_and_reports_usage(client: OpenAI) -> None:
    full = client.chat.completions.create(model="tiny", messages=USER, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model="tiny",
        messages=USER,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finishes, usage = [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                pieces.append(ch.delta.content)
            if ch.finish_reason:
                finishes.append(ch.finish_reason)
    assert len(pieces) > 3  # really streamed, not one blob
    assert "".join(pieces) == full.choices[0].message.content
    assert finishes == ["length"]
    assert usage is not None and usage.completion_tokens == 16


def test_stop_sequence_truncates_and_reports_stop(client: OpenAI) -> None:
    text = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0)
    content = text.choices[0].message.content or ""
    words = content.split()
    stop = words[len(words) // 2]
    cut = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0, stop=[stop])
    out = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in out
    assert content.startswith(out)
    assert len(out) < len(content)


def test_seed_makes_sampling_repeatable(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=1.0, seed=seed)
        return r.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1  # the seed really drives the sampler


def test_temperature_zero_is_deterministic(client: OpenAI) -> None:
    outs = {
        client.chat.completions.create(model="tiny", messages=USER, max_tokens=10, temperature=0)
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(outs) == 1


def test_json_mode_constrains_output_to_json(client: OpenAI) -> None:
    import json

    for max_tokens in (40, 400):
        r = client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=max_tokens,
            temperature=0,
            response_format={"type": "json_object"},
        )
        content = r.choices[0].message.content or ""
        assert content.lstrip().startswith("{"), content
        if r.choices[0].finish_reason == "stop":  # a cut-off answer is a JSON prefix, as at OpenAI
            assert isinstance(json.loads(content), dict)


def test_concurrent_requests_all_complete(client: OpenAI) -> None:
    def one(i: int) -> int:
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=8, temperature=0
        )
        assert r.usage is not None
        return r.usage.completion_tokens

    with cf.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(6))) == [8] * 6


def test_text_completions(client: OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=7, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage is not None and r.usage.completion_tokens == 7
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=7, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].text


def test_embeddings_are_unit_vectors(client: OpenAI) -> None:
    r = client.embeddings.create(model="all-minilm-l6-v2", input=["local models", "a cat on a mat"])
    assert len(r.data) == 2
    for d in r.data:
        assert len(d.embedding) == 384
        assert abs(sum(x * x for x in d.embedding) - 1.0) < 1e-3
    assert r.usage.prompt_tokens > 0


def test_models_list_shows_cached_models_and_labels_synthetic(client: OpenAI) -> None:
    ids = {m.id: m for m in client.models.list().data}
    assert {"tiny", "tiny-coder", "all-minilm-l6-v2"} <= set(ids)
    extra = ids["tiny"].model_extra or {}
    assert extra["lokal"]["synthetic"] is True
    assert "qwen2.5-0.5b" not in ids  # in the catalog, but not downloaded


def test_health_and_metrics(lokal_server: LokalServer, client: OpenAI) -> None:
    client.chat.completions.create(model="tiny", messages=USER, max_tokens=3)
    assert httpx.get(lokal_server.url + "/health").json()["status"] == "ok"
    text = httpx.get(lokal_server.url + "/metrics").text
    for name in (
        "lokal_requests_total",
        "lokal_tokens_total",
        "lokal_queue_depth",
        "lokal_time_to_first_token_seconds_bucket",
        "lokal_output_tokens_per_second_bucket",
        "lokal_loaded_models",
    ):
        assert name in text, name
    assert 'lokal_tokens_total{direction="out",model="tiny"}' in text
