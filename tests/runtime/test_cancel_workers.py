"""Cancellation and forced unload inside the runtime, in-process and deterministic (test_cancel.py drives the
same through a real server): work whose caller left never runs, abort hands every caller an error at once,
the prompt is read in chunks a cancel can stop, and the embeddings token count runs on the engine thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings
from lokal.engines.base import EngineInfo, GenerationEvent, GenerationRequest, Usage
from lokal.engines.llamacpp import PrefillPacer
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine
from lokal.errors import ContextLengthExceeded, ModelUnloaded
from lokal.protocol.embeddings import EmbeddingRequest
from lokal.protocol.sse import encode
from lokal.runtime.batch_worker import BatchWorker
from lokal.runtime.manager import ModelManager
from lokal.runtime.metrics import Metrics
from lokal.runtime.worker import ModelWorker
from lokal.server.serving import Serving


class FakeEngine:
    """Generates one token per `tick` seconds until cancelled; records what ran and on which thread."""

    def __init__(self, tick: float = 0.01) -> None:
        self.info = EngineInfo(extra={"dimensions": 3})
        self.tick = tick
        self.started: list[str] = []
        self.threads: dict[str, str] = {}

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None: ...

    def count_tokens(self, req: GenerationRequest) -> int:
        return 1

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        self.started.append(req.prompt or "")
        for n in range(req.max_tokens or 1000):
            if cancel.is_set():
                yield GenerationEvent(finish_reason="cancelled", usage=Usage(1, n))
                return
            time.sleep(self.tick)
            yield GenerationEvent(text="x")
        yield GenerationEvent(finish_reason="length", usage=Usage(1, req.max_tokens or 1000))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.threads["embed"] = threading.current_thread().name
        return [[1.0, 0.0, 0.0] for _ in texts]

    def count_text_tokens(self, texts: Sequence[str]) -> int:
        self.threads["count"] = threading.current_thread().name
        return 7 * len(texts)

    def unload(self) -> None: ...


async def _drain(events: AsyncIterator[GenerationEvent]) -> str:
    return "".join([ev.text async for ev in events])


# -- ModelWorker -------------------------------------------------------------------------------------------------
def test_queued_job_whose_caller_left_never_runs() -> None:
    engine = FakeEngine()
    worker = ModelWorker(engine, "fake")

    async def main() -> None:
        running = worker.generate(GenerationRequest(prompt="running", max_tokens=1000))
        await anext(running)
        queued = asyncio.create_task(_drain(worker.generate(GenerationRequest(prompt="queued", max_tokens=5))))
        await asyncio.sleep(0.05)
        assert worker.stats()["waiting"] == 1
        queued.cancel()  # the client of the queued request went away
        await asyncio.gather(queued, return_exceptions=True)
        assert worker.stats() == {"slots": 1, "slots_busy": 1, "waiting": 0}  # out of the queue at once
        await running.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert engine.started == ["running"]
    assert worker.stats() == {"slots": 1, "slots_busy": 0, "waiting": 0}
    worker.close()


def test_abort_fails_running_and_queued_jobs_at_once_and_close_is_prompt() -> None:
    worker = ModelWorker(FakeEngine(tick=0.05), "fake")

    async def main() -> list[object]:
        running = worker.generate(GenerationRequest(prompt="running", max_tokens=1000))
        await anext(running)
        tasks = [asyncio.create_task(_drain(running))]
        tasks += [asyncio.create_task(_drain(worker.generate(GenerationRequest(prompt=f"q{i}")))) for i in range(3)]
        await asyncio.sleep(0.02)
        worker.abort(ModelUnloaded("gone"))
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)

    results = asyncio.run(main())
    assert all(isinstance(r, ModelUnloaded) for r in results), results
    t0 = time.monotonic()
    worker.close()
    assert time.monotonic() - t0 < 0.5

    async def after() -> None:
        with pytest.raises(ModelUnloaded):
            await _drain(worker.generate(GenerationRequest(prompt="late")))

    asyncio.run(after())


# -- BatchWorker on the real batched engine ----------------------------------------------------------------------
@pytest.fixture
def batch(tiny_gguf: Path) -> Iterator[BatchWorker]:
    variant = Variant(id="m:1", path=str(tiny_gguf))
    engine = BatchedLlamaCppEngine(parallel=2)
    engine.load(ModelSpec(alias="m", context_length=1024, variants=[variant]), variant, tiny_gguf)
    worker = BatchWorker(engine, "tiny", queue_size=4)
    yield worker
    worker.close()


def test_batch_worker_drops_queued_requests_whose_callers_left(batch: BatchWorker) -> None:
    async def main() -> None:
        long = [batch.generate(GenerationRequest(prompt=f"long {i}", max_tokens=900, temperature=0)) for i in range(2)]
        for g in long:
            await anext(g)
        queued = asyncio.create_task(_drain(batch.generate(GenerationRequest(prompt="queued", max_tokens=900))))
        await asyncio.sleep(0.05)
        assert batch.stats()["waiting"] == 1
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        for _ in range(100):  # dropped at the next step, while both slots stay busy
            if batch.stats()["waiting"] == 0:
                break
            await asyncio.sleep(0.01)
        assert batch.stats()["waiting"] == 0 and batch.stats()["slots_busy"] == 2
        for g in long:
            await g.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    steps = batch.engine.steps
    assert steps < 600  # neither the 900-token queued request nor the cancelled long ones ran to the end


def test_batch_worker_abort_fails_everything_in_flight(batch: BatchWorker) -> None:
    async def main() -> list[object]:
        reqs = [GenerationRequest(prompt=f"story {i}", max_tokens=900, temperature=0) for i in range(4)]
        tasks = [asyncio.create_task(_drain(batch.generate(r))) for r in reqs]  # 2 in slots, 2 waiting
        while batch.stats()["slots_busy"] < 2:
            await asyncio.sleep(0.01)
        batch.abort(ModelUnloaded("gone"))
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)

    results = asyncio.run(main())
    assert all(isinstance(r, ModelUnloaded) for r in results), results
    t0 = time.monotonic()
    batch.close()
    assert time.monotonic() - t0 < 1.0
    assert batch.engine.free_slots == 2


# -- prompt reading in chunks ------------------------------------------------------------------------------------
def test_prefill_pacer_sizes_chunks_to_the_time_target() -> None:
    pacer = PrefillPacer(0.25, solo_seconds=0.75, first=64, least=16, most=512)
    assert pacer.size() == 64
    pacer.record(64, 0.64)  # 10 ms a token: 25 tokens make 0.25 s
    assert pacer.size() == 25
    assert pacer.size(solo=True) == 75  # no stream waits on a lone prompt: only a cancel, within 0.75 s
    pacer.record(4, 10.0)  # too few tokens to say anything per token
    assert pacer.size() == 25
    for _ in range(20):
        pacer.record(512, 0.0512)  # 0.1 ms a token: capped at most
    assert pacer.size() == 512


def test_single_stream_engine_reads_the_prompt_in_chunks_and_stops_between_them(tiny_gguf: Path) -> None:
    variant = Variant(id="m:1", path=str(tiny_gguf))
    engine = BatchedLlamaCppEngine(parallel=1)  # one slot: the single-stream LlamaCppEngine path
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, tiny_gguf)
    engine._pacer = PrefillPacer(first=16, least=16, most=16)
    chunks: list[int] = []
    llm = engine._llm
    real_eval = llm.eval
    cancel = threading.Event()

    def eval_chunk(tokens: Sequence[int]) -> None:
        chunks.append(len(tokens))
        real_eval(tokens)
        if len(chunks) == 3 and stop_early:
            cancel.set()  # the client left while the prompt was being read

    llm.eval = eval_chunk
    prompt = GenerationRequest(prompt="a b c d " * 40, max_tokens=8, temperature=0)
    try:
        stop_early = True
        events = list(engine.generate(prompt, cancel))
        assert events[-1].finish_reason == "cancelled" and not any(e.text for e in events)
        assert chunks == [16, 16, 16]  # stopped after the chunk in flight, long before the ~160-token prompt's end
        stop_early, chunks[:] = False, []
        cancel.clear()
        first = "".join(e.text for e in engine.generate(prompt, threading.Event()))
        assert chunks and chunks[0] == 16 and sum(chunks) < engine.count_tokens(prompt) - 40  # went on from cache
        other = GenerationRequest(prompt="something else entirely", max_tokens=8, temperature=0)
        list(engine.generate(other, threading.Event()))
        again = "".join(e.text for e in engine.generate(prompt, threading.Event()))
        assert first and again == first  # cache reuse and chunking do not change the answer
        with pytest.raises(ContextLengthExceeded):
            list(engine.generate(GenerationRequest(prompt="x", max_tokens=5000), threading.Event()))
    finally:
        llm.eval = real_eval
        engine.unload()


# -- serving -----------------------------------------------------------------------------------------------------
def test_embeddings_count_tokens_on_the_engine_thread(tmp_path: Path) -> None:
    engine = FakeEngine()
    spec = ModelSpec(alias="emb", task="embeddings", variants=[Variant(id="emb:1", engine="sentence-transformers")])
    manager = ModelManager(
        Settings(home=tmp_path), lambda _: (spec, spec.variants[0]), lambda _: tmp_path, lambda _: engine
    )
    serving = Serving(manager, Metrics())

    async def main() -> dict[str, object]:
        out = await serving.embeddings(EmbeddingRequest(model="emb", input=["a", "b"], dimensions=3))
        await manager.close()
        return out

    out = asyncio.run(main())
    assert out.usage.model_dump() == {"prompt_tokens": 14, "total_tokens": 14}
    assert engine.threads == {"embed": "lokal-engine-emb", "count": "lokal-engine-emb"}


# -- the error frame ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [(ModelUnloaded("gone"), "model_unloaded", "server_error"), (ValueError("boom"), "engine_error", "server_error")],
)
def test_a_stream_that_fails_after_its_first_byte_ends_with_one_error_frame(
    error: Exception, code: str, kind: str
) -> None:
    async def events() -> AsyncIterator[str]:
        yield '{"x": 1}'
        raise error

    async def main() -> list[str]:
        return [frame async for frame in encode(events())]

    frames = asyncio.run(main())
    assert frames[0] == 'data: {"x": 1}\n\n'
    assert len(frames) == 2 and frames[1].startswith("data: ") and frames[1].endswith("\n\n")
    body = json.loads(frames[1][len("data: ") :])
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["type"] == kind
