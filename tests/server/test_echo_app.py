"""The whole app in this process over httpx.ASGITransport, on echo models and a clock moved by hand: the API's
answers are exact (the echo writes the last user message), and TTLs are read without waiting for them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from lokal.runtime.services import Services
from tests.support.echo import Clock, echo_app, echo_entry, echo_settings

T = TypeVar("T")
Scenario = Callable[[httpx.AsyncClient, Services, Clock], Coroutine[Any, Any, T]]


def run(home: Path, scenario: Scenario[T], **settings: Any) -> T:
    entries = [echo_entry(home, "echo"), echo_entry(home, "echo-2"), echo_entry(home, "vec", task="embeddings")]
    clock = Clock()

    async def main() -> T:
        async with echo_app(echo_settings(home, entries, **settings), clock=clock) as (client, services):
            return await scenario(client, services, clock)

    return asyncio.run(main())


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


def sse(text: str) -> list[dict[str, Any]]:
    frames = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def test_chat_answers_with_the_last_user_message_and_counts_tokens(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> dict[str, Any]:
        r = await client.post("/v1/chat/completions", json=chat_body("the quick brown fox"))
        assert r.status_code == 200, r.text
        assert r.headers["x-lokal-model"] == "echo:1"
        data: dict[str, Any] = r.json()
        return data

    data = run(tmp_path, scenario)
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "the quick brown fox"}
    assert data["choices"][0]["finish_reason"] == "stop"
    # "user: the quick brown fox\n": five tokens in, four out
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_stream_sends_each_token_then_finish_then_usage(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> str:
        body = chat_body("one two three", stream=True, stream_options={"include_usage": True})
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return r.text

    chunks = sse(run(tmp_path, scenario))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [p for p in pieces if p] == ["one ", "two ", "three"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("extra", "content", "finish", "completion_tokens"),
    [
        ({"max_tokens": 2}, "a b ", "length", 2),
        ({"stop": ["c d"]}, "a b ", "stop", 4),
        ({"stop": ["zzz"], "max_tokens": 100}, "a b c d e", "stop", 5),
    ],
)
def test_max_tokens_and_stop_cut_the_answer_where_they_say(
    tmp_path: Path, extra: dict[str, Any], content: str, finish: str, completion_tokens: int
) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> dict[str, Any]:
        data: dict[str, Any] = (await client.post("/v1/chat/completions", json=chat_body("a b c d e", **extra))).json()
        return data

    data = run(tmp_path, scenario)
    assert data["choices"][0]["message"]["content"] == content
    assert data["choices"][0]["finish_reason"] == finish
    assert data["usage"]["completion_tokens"] == completion_tokens


def test_logprobs_are_the_echos_certainty(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> dict[str, Any]:
        body = chat_body("yes no", logprobs=True, top_logprobs=1)
        data: dict[str, Any] = (await client.post("/v1/chat/completions", json=body)).json()
        return data

    content = run(tmp_path, scenario)["choices"][0]["logprobs"]["content"]
    assert [(t["token"], t["logprob"]) for t in content] == [("yes ", 0.0), ("no", 0.0)]
    assert [[a["token"] for a in t["top_logprobs"]] for t in content] == [["yes "], ["no"]]


def test_embeddings_are_unit_vectors_equal_for_equal_text(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> dict[str, Any]:
        r = await client.post("/v1/embeddings", json={"model": "vec", "input": ["same", "same", "other"]})
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    data = run(tmp_path, scenario)
    vectors = [d["embedding"] for d in data["data"]]
    assert len(vectors[0]) == 16 and vectors[0] == vectors[1] != vectors[2]
    assert abs(sum(x * x for x in vectors[2]) - 1) < 1e-6


def test_ps_shows_ttl_left_on_the_managers_clock_and_the_reaper_unloads(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> list[Any]:
        seen: list[Any] = []
        await client.post("/v1/chat/completions", json=chat_body("hi"))
        await client.post("/lokal/models/echo-2/load", params={"ttl": 60})
        clock.advance(45)
        ps = (await client.get("/lokal/ps")).json()["models"]
        seen.append({m["alias"]: m["ttl_left"] for m in ps})
        clock.advance(20)
        seen.append(await services.manager.reap_expired())
        clock.advance(600)
        seen.append(await services.manager.reap_expired())
        seen.append((await client.get("/lokal/ps")).json()["models"])
        return seen

    assert run(tmp_path, scenario, ttl_seconds=600) == [{"echo": 555, "echo-2": 15}, ["echo-2"], ["echo"], []]


def test_foundry_load_with_ttl_list_and_unload(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> list[Any]:
        seen: list[Any] = []
        r = await client.get("/openai/load/echo:1", params={"ttl": 123, "ep": "cpu"})
        assert r.status_code == 200, r.text
        seen.append((await client.get("/openai/loadedmodels")).json())
        clock.advance(23)
        seen.append((await client.get("/lokal/ps")).json()["models"][0]["ttl_left"])
        seen.append((await client.get("/openai/unload/echo:1", params={"force": "true"})).json())
        await client.get("/openai/load/echo-2")  # by alias
        seen.append((await client.get("/openai/unloadall")).json())
        return seen

    assert run(tmp_path, scenario) == [["echo:1"], 100, {"unloaded": True}, {"unloaded": ["echo-2:1"]}]


def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    entries = [echo_entry(tmp_path, "slow", delay_s=0.05)]

    async def main() -> tuple[list[httpx.Response], int]:
        async with echo_app(echo_settings(tmp_path, entries, queue_size=1)) as (client, services):
            body = {"model": "slow", "messages": [{"role": "user", "content": "w " * 10}]}
            first = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
            while not (services.manager.loaded() and services.manager.loaded()[0].worker.stats()["slots_busy"]):
                await asyncio.sleep(0.005)
            rest = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(3)))
            answers = [await first, *rest]
            after = (await client.post("/v1/chat/completions", json=body)).status_code  # the queue drained
            return list(answers), after

    answers, after = asyncio.run(main())
    assert sorted(r.status_code for r in answers) == [200, 200, 503, 503]  # one running, one queued
    busy = [r for r in answers if r.status_code == 503][0]
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "overloaded"
    assert after == 200


def test_a_model_asked_for_the_wrong_task_is_refused_and_not_loaded(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, services: Services, clock: Clock) -> list[Any]:
        chat = await client.post("/v1/chat/completions", json={**chat_body("hi"), "model": "vec"})
        return [chat.status_code, chat.json()["error"]["param"], [m.spec.alias for m in services.manager.loaded()]]

    assert run(tmp_path, scenario) == [400, "model", []]
