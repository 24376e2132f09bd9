"""Continuous batching end to end: a real `lokal serve`, the official openai client, concurrent streams."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer


def _client(server: LokalServer, closing: ExitStack) -> OpenAI:
    return closing.enter_context(OpenAI(base_url=server.base_url, api_key="lokal", max_retries=0, timeout=60))


def _model_ps(server: LokalServer, alias: str) -> dict[str, Any]:
    models = httpx.get(server.url + "/lokal/ps").json()["models"]
    found: dict[str, Any] = next(m for m in models if m["alias"] == alias)
    return found


def _ask(client: OpenAI, model: str, i: int, max_tokens: int, stream: bool = False) -> str:
    messages = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": f"Question {i}: " + "and why " * (3 * i)}]
    if not stream:
        r = client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                           max_tokens=max_tokens, temperature=0, seed=42)
        return r.choices[0].message.content or ""
    parts = []
    for chunk in client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                                max_tokens=max_tokens, temperature=0, seed=42, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def _same_alone_and_together(
    server: LokalServer, model: str, n: int, closing: ExitStack
) -> tuple[list[str], list[str]]:
    client = _client(server, closing)
    lengths = [12 + 9 * (i % 4) for i in range(n)]  # mixed lengths: sequences leave the batch at different steps
    alone = [_ask(client, model, i, lengths[i], stream=i % 2 == 0) for i in range(n)]
    with cf.ThreadPoolExecutor(n) as pool:
        together = list(pool.map(lambda i: _ask(client, model, i, lengths[i], stream=i % 2 == 0), range(n)))
    return alone, together


def test_concurrent_streams_match_the_same_requests_one_at_a_time(
    lokal_server: LokalServer, closing: ExitStack
) -> None:
    alone, together = _same_alone_and_together(lokal_server, "tiny", 6, closing)
    assert all(alone)
    assert together == alone
    ps = _model_ps(lokal_server, "tiny")
    assert ps["slots"] == 4 and ps["slots_busy"] == 0 and ps["waiting"] == 0
    assert ps["decode_steps"] > 0 and ps["prefix_reused_tokens"] > 0  # the shared system prompt came from cache
    metrics = httpx.get(lokal_server.url + "/metrics").text
    assert 'lokal_slots{model="tiny"} 4.0' in metrics
    sizes = [line for line in metrics.splitlines() if line.startswith('lokal_batch_size{model="tiny"}')]
    assert sizes and float(sizes[0].rsplit(" ", 1)[1]) > 0


def test_batch_really_forms_under_concurrency(lokal_server: LokalServer, closing: ExitStack) -> None:
    client = _client(lokal_server, closing)
    messages = [{"role": "user", "content": "Tell me a long story."}]

    def tokens(_: int) -> int:
        r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=120)  # type: ignore[arg-type]
        assert r.usage is not None
        return r.usage.completion_tokens

    tokens(0)  # loaded, so its step count exists before the measured round
    before = _model_ps(lokal_server, "tiny")["decode_steps"]
    with cf.ThreadPoolExecutor(4) as pool:
        generated = sum(pool.map(tokens, range(4)))
    steps = _model_ps(lokal_server, "tiny")["decode_steps"] - before
    # Over the test's own steps (prefill included), not the last 64: a request that a busy machine starts late
    # only thins the tail. One at a time would be under one token a step; four together near four.
    assert generated >= 200 and generated / steps > 2, (generated, steps)


def test_closing_one_stream_mid_batch_frees_its_slot(lokal_server: LokalServer, closing: ExitStack) -> None:
    client = _client(lokal_server, closing)
    expected = [_ask(client, "tiny", i, 200) for i in range(3)]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go on forever"}], "max_tokens": 1500,
            "temperature": 0, "stream": True}
    most_busy = 0
    with cf.ThreadPoolExecutor(3) as pool:
        with httpx.stream("POST", lokal_server.base_url + "/chat/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()
            assert any(next(lines).startswith("data:") for _ in range(4))
            others = [pool.submit(_ask, client, "tiny", i, 200) for i in range(3)]
            while not all(f.done() for f in others):
                most_busy = max(most_busy, _model_ps(lokal_server, "tiny")["slots_busy"])
        got = [f.result() for f in others]  # the long stream was closed above; the others carried on
    assert got == expected
    assert most_busy >= 2  # the long stream and others shared the batch
    deadline = time.monotonic() + 2
    while (busy := _model_ps(lokal_server, "tiny")["slots_busy"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy == 0


@pytest.fixture(scope="module")
def q8_server(tiny_gguf_q8: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("batch-q8")
    write_catalog(home, [tiny_entry("tiny-q8", tiny_gguf_q8, ["general"])])
    with LokalServer(home, env={"LOKAL_PARALLEL": "3"}) as server:
        yield server


def test_quantized_model_goes_through_the_batched_path(q8_server: LokalServer, closing: ExitStack) -> None:
    alone, together = _same_alone_and_together(q8_server, "tiny-q8", 5, closing)
    assert all(alone)
    assert together == alone
    ps = _model_ps(q8_server, "tiny-q8")
    assert ps["slots"] == 3  # LOKAL_PARALLEL
    assert ps["decode_steps"] > 0
