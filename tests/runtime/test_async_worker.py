"""AsyncWorker on the real remote engine in front of a scripted upstream (known TTFT and inter-token delay):
concurrency up to the engine's capacity, a bounded queue, 503 beyond it, cancellation, abort, close."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import ChatMessage, GenerationEvent, GenerationRequest
from lokal.engines.remote import RemoteEngine
from lokal.errors import ModelUnloaded, Overloaded
from lokal.runtime.async_worker import AsyncWorker
from lokal.runtime.engines import traits_of
from lokal.runtime.workers import make_worker
from tests.support.models import write_catalog
from tests.support.scripted import Script, ScriptedServer
from tests.support.server import LokalServer

ASK = GenerationRequest(messages=(ChatMessage("user", "hello there"),), max_tokens=50)


@pytest.fixture
def upstream() -> Iterator[ScriptedServer]:
    with ScriptedServer(Script(ttft_s=0.02, itl_s=0.02, tokens=10)) as srv:
        yield srv


def _engine(srv: ScriptedServer, **upstream: Any) -> RemoteEngine:
    variant = Variant(id="up:1", engine="remote", base_url=srv.base_url, health_check_s=0, **upstream)
    spec = ModelSpec(alias="up", variants=[variant])
    engine = RemoteEngine(timeout=10)
    engine.load(spec, variant, None)
    return engine


async def _worker(srv: ScriptedServer, queue_size: int = 32, **upstream: Any) -> AsyncWorker:
    worker = make_worker(_engine(srv, **upstream), "up", queue_size, concurrency=traits_of("remote").concurrency)
    assert isinstance(worker, AsyncWorker)
    await worker.start()
    return worker


async def _text(events: AsyncIterator[GenerationEvent]) -> str:
    return "".join([ev.text async for ev in events])


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_requests_run_at_once_up_to_max_concurrency_then_queue_then_503(upstream: ScriptedServer) -> None:
    async def main() -> None:
        worker = await _worker(upstream, queue_size=2, max_concurrency=3)
        try:
            assert worker.stats() == {"slots": 3, "slots_busy": 0, "waiting": 0}
            tasks = [asyncio.create_task(_text(worker.generate(ASK))) for _ in range(5)]
            await _until(lambda: worker.stats()["slots_busy"] == 3 and worker.stats()["waiting"] == 2)
            assert worker.depth == 5
            with pytest.raises(Overloaded) as full:
                await _text(worker.generate(ASK))
            assert full.value.retry_after == 1
            texts = await asyncio.gather(*tasks)
            assert texts == ["w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "] * 5
            assert upstream.stats.max_in_flight == 3 and upstream.stats.requests == 5
            assert worker.stats() == {"slots": 3, "slots_busy": 0, "waiting": 0}
        finally:
            await worker.aclose()

    asyncio.run(main())


def test_a_caller_that_leaves_closes_its_upstream_request_and_frees_its_slot() -> None:
    async def main(upstream: ScriptedServer) -> None:
        worker = await _worker(upstream, queue_size=1, max_concurrency=1)
        try:
            events = worker.generate(GenerationRequest(messages=ASK.messages, max_tokens=200))
            assert (await anext(events)).text
            queued = asyncio.create_task(anext(worker.generate(ASK)))
            await _until(lambda: worker.stats()["waiting"] == 1)
            queued.cancel()  # gone before its turn: never sent
            await asyncio.gather(queued, return_exceptions=True)
            assert worker.stats()["waiting"] == 0
            t0 = time.perf_counter()
            await events.aclose()  # the client went away mid-stream
            await _until(lambda: upstream.stats.in_flight == 0)
            assert time.perf_counter() - t0 < 2
            assert worker.stats()["slots_busy"] == 0 and upstream.stats.requests == 1
        finally:
            await worker.aclose()

    with ScriptedServer(Script(itl_s=0.05, tokens=200)) as slow:  # ten seconds if nobody stops it
        asyncio.run(main(slow))


def test_abort_ends_every_running_and_queued_request_at_once(upstream: ScriptedServer) -> None:
    async def main() -> None:
        worker = await _worker(upstream, queue_size=4, max_concurrency=2)
        long = GenerationRequest(messages=ASK.messages, max_tokens=10)
        try:
            tasks = [asyncio.create_task(_text(worker.generate(long))) for _ in range(4)]
            await _until(lambda: worker.stats()["slots_busy"] == 2 and worker.stats()["waiting"] == 2)
            await _until(lambda: upstream.stats.in_flight == 2)
            t0 = time.perf_counter()
            worker.abort(ModelUnloaded("unloaded under you"))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert time.perf_counter() - t0 < 0.5
            assert all(isinstance(r, ModelUnloaded) for r in results), results
            with pytest.raises(ModelUnloaded):
                await _text(worker.generate(ASK))
            await _until(lambda: upstream.stats.in_flight == 0)
            assert upstream.stats.requests == 2  # the queued two never reached the upstream
        finally:
            await worker.aclose()

    asyncio.run(main())


def test_close_finishes_the_running_work_then_closes_the_engine(upstream: ScriptedServer) -> None:
    async def main() -> None:
        worker = await _worker(upstream, max_concurrency=1)
        tasks = [asyncio.create_task(_text(worker.generate(ASK))) for _ in range(2)]
        await _until(lambda: worker.depth == 2)
        await worker.aclose()
        assert [len(t) for t in await asyncio.gather(*tasks)] == [30, 30]
        with pytest.raises(ModelUnloaded):
            await _text(worker.generate(ASK))
        assert worker.engine.capacity == 1  # back to the catalog's figure: the pool is gone

    asyncio.run(main())


def test_engine_calls_run_off_the_loop_and_count_tokens(upstream: ScriptedServer) -> None:
    async def main() -> None:
        worker = await _worker(upstream)
        try:
            assert await worker.call(lambda: worker.engine.count_tokens(ASK)) == 2
            # The call runs on a thread, so the engine's sync face (what serving's embeddings path calls)
            # works from there: it hands the request back to this loop.
            assert await worker.call(lambda: _text_sync(worker.engine)) == "w0 w1 w2 "
        finally:
            await worker.aclose()

    asyncio.run(main())


def _text_sync(engine: Any) -> str:
    req = GenerationRequest(messages=ASK.messages, max_tokens=3)
    return "".join(e.text for e in engine.generate(req, threading.Event()))


# -- through a real `lokal serve`, with the official client --------------------------------------------------------
STREAM = Script(ttft_s=0.1, itl_s=0.02, tokens=20)  # one stream: ~0.5 s, nearly all of it waiting on the upstream
SLOW = Script(itl_s=0.02, tokens=1000)  # twenty seconds if nobody stops it
MSGS: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@dataclass
class Front:
    lokal: LokalServer
    fast: ScriptedServer
    slow: ScriptedServer

    def client(self, closing: ExitStack) -> OpenAI:
        return closing.enter_context(OpenAI(base_url=self.lokal.base_url, api_key="x", max_retries=0))


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    home = tmp_path_factory.mktemp("async-front")
    with ScriptedServer(STREAM) as fast, ScriptedServer(SLOW) as slow:
        write_catalog(
            home,
            [
                {"alias": "up", "variants": [{"id": "up:1", "engine": "remote", "base_url": fast.base_url}]},
                {
                    "alias": "narrow",
                    "variants": [
                        {"id": "narrow:1", "engine": "remote", "base_url": fast.base_url, "max_concurrency": 2}
                    ],
                },
                {"alias": "slow", "variants": [{"id": "slow:1", "engine": "remote", "base_url": slow.base_url}]},
            ],
        )
        with LokalServer(home, env={"LOKAL_QUEUE_SIZE": "2"}, args=["--model", "up"]) as lokal:
            yield Front(lokal, fast, slow)


def _stream(client: OpenAI, model: str, max_tokens: int = 50) -> tuple[str, float]:
    t0 = time.perf_counter()
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=model, messages=MSGS, max_tokens=max_tokens, stream=True)
        if c.choices
    )
    return text, time.perf_counter() - t0


def test_eight_streams_run_at_once_at_the_upstream(front: Front, closing: ExitStack) -> None:
    client = front.client(closing)
    _stream(client, "up")  # loaded, connections warm
    front.fast.stats.reset()
    text, one = _stream(client, "up")
    assert text == "".join(f"w{i} " for i in range(20))
    with cf.ThreadPoolExecutor(8) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda _: _stream(client, "up"), range(8)))
        eight = time.perf_counter() - t0
    assert all(t == text for t, _ in results)
    assert front.fast.stats.max_in_flight == 8
    speedup = 8 * one / eight  # aggregate tokens/s of eight streams over one stream's
    print(f"one stream {one:.3f} s, eight at once {eight:.3f} s: aggregate {speedup:.2f}x")
    assert speedup >= 5, (one, eight)


def test_max_concurrency_is_what_the_upstream_sees_and_a_full_queue_is_a_503(front: Front, closing: ExitStack) -> None:
    client = front.client(closing)
    _stream(client, "narrow", 2)  # loaded
    front.fast.stats.reset()

    def attempt(_: int) -> str | int:
        try:
            return _stream(client, "narrow")[0]
        except openai.APIStatusError as exc:
            assert exc.response.headers["retry-after"] == "1" and exc.code == "overloaded"
            return exc.status_code

    with cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(attempt, range(6)))
    # Two at the upstream, two queued behind them (LOKAL_QUEUE_SIZE=2), the other two refused at once.
    assert sorted(map(str, results)).count("503") == 2, results
    assert front.fast.stats.max_in_flight == 2 and front.fast.stats.requests == 4


def test_a_client_that_leaves_mid_stream_closes_the_upstream_request(front: Front, closing: ExitStack) -> None:
    client = front.client(closing)
    front.slow.stats.reset()
    stream = client.chat.completions.create(model="slow", messages=MSGS, max_tokens=1000, stream=True)
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    assert front.slow.stats.in_flight == 1
    stream.close()
    deadline = time.monotonic() + 3
    while front.slow.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert front.slow.stats.in_flight == 0 and front.slow.stats.requests == 1
    ps = httpx.get(front.lokal.url + "/lokal/ps", timeout=10).json()
    [row] = [m for m in ps["models"] if m["alias"] == "slow"]
    assert row["slots_busy"] == 0 and row["queue_depth"] == 0


def test_a_forced_unload_ends_a_running_stream_with_an_error_frame(front: Front) -> None:
    front.slow.stats.reset()
    body = {"model": "slow", "messages": MSGS, "max_tokens": 1000, "stream": True}
    with httpx.stream("POST", front.lokal.base_url + "/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: {")
        r = httpx.post(front.lokal.url + "/lokal/models/slow/unload", params={"force": "true"}, timeout=30)
        assert r.json() == {"unloaded": True}
        rest = [line for line in lines if line]
    frame = json.loads(rest[-1].removeprefix("data: "))
    assert frame["error"]["code"] == "model_unloaded" and "data: [DONE]" not in rest
    deadline = time.monotonic() + 3
    while front.slow.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert front.slow.stats.in_flight == 0
