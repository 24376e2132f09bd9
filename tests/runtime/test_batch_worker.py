"""BatchWorker on the real batched engine: the async interface of ModelWorker, many requests per step."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import GenerationRequest
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine
from lokal.errors import ContextLengthExceeded, InvalidRequest, Overloaded
from lokal.runtime.batch_worker import BatchWorker
from lokal.runtime.worker import ModelWorker
from lokal.runtime.workers import make_worker


def _engine(path: Path, parallel: int = 4) -> BatchedLlamaCppEngine:
    variant = Variant(id="m:1", path=str(path))
    engine = BatchedLlamaCppEngine(parallel=parallel)
    engine.load(ModelSpec(alias="m", context_length=1024, variants=[variant]), variant, path)
    return engine


@pytest.fixture
def worker(tiny_gguf: Path) -> Iterator[BatchWorker]:
    w = make_worker(_engine(tiny_gguf), "tiny", queue_size=4, concurrency="batch")
    assert isinstance(w, BatchWorker)
    yield w
    w.close()


async def _text(w: BatchWorker | ModelWorker, req: GenerationRequest) -> str:
    return "".join([ev.text async for ev in w.generate(req)])


def _reqs(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"story number {i}", max_tokens=10 + 9 * i, temperature=0) for i in range(n)]


def test_concurrent_generations_match_sequential_ones(worker: BatchWorker) -> None:
    reqs = _reqs(6)  # more than the 4 slots: two wait, then join between steps

    async def main() -> tuple[list[str], list[str]]:
        one_by_one = [await _text(worker, r) for r in reqs]
        together = await asyncio.gather(*(_text(worker, r) for r in reqs))
        return one_by_one, list(together)

    one_by_one, together = asyncio.run(main())
    assert together == one_by_one
    stats = worker.stats()
    assert stats["slots"] == 4 and stats["slots_busy"] == 0 and stats["waiting"] == 0
    assert stats["batch_size"] > 1 and stats["decode_steps"] > 0


def test_closing_one_stream_frees_its_slot_and_the_others_finish(worker: BatchWorker) -> None:
    async def main() -> tuple[list[str], int]:
        long = worker.generate(GenerationRequest(prompt="go on", max_tokens=900, temperature=0))
        others = [asyncio.create_task(_text(worker, r)) for r in _reqs(3)]
        await anext(long)
        await long.aclose()  # the client went away mid-batch
        texts = await asyncio.gather(*others)
        for _ in range(100):  # the slot is freed at the next step
            if worker.stats()["slots_busy"] == 0:
                break
            await asyncio.sleep(0.01)
        return list(texts), int(worker.stats()["slots_busy"])

    texts, busy = asyncio.run(main())
    assert all(texts) and busy == 0
    assert worker.engine.free_slots == 4
    assert worker.engine.steps < 400  # nowhere near the 900 tokens the cancelled request asked for


def test_queue_beyond_the_slots_is_bounded(worker: BatchWorker) -> None:
    async def main() -> list[object]:
        reqs = [GenerationRequest(prompt="x", max_tokens=300, temperature=0)] * 12
        return await asyncio.gather(*(_text(worker, r) for r in reqs), return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, str)]
    assert len(served) == 8 and len(refused) == 4  # 4 slots + 4 queued


def test_errors_and_engine_calls_reach_the_caller(worker: BatchWorker) -> None:
    async def main() -> int:
        with pytest.raises(ContextLengthExceeded):
            await _text(worker, GenerationRequest(prompt="x", max_tokens=5000))
        with pytest.raises(InvalidRequest):
            await worker.embed(["not an embeddings model"])
        n: int = await worker.call(lambda: worker.engine.count_tokens(GenerationRequest(prompt="hello there")))
        return n

    assert asyncio.run(main()) > 1
    assert worker.engine.free_slots == 4


def test_one_slot_gets_the_one_at_a_time_worker(tiny_gguf: Path) -> None:
    w = make_worker(_engine(tiny_gguf, parallel=1), "tiny", concurrency="batch")
    try:
        assert isinstance(w, ModelWorker)
        assert w.stats()["slots"] == 1
        assert asyncio.run(_text(w, _reqs(1)[0]))
    finally:
        w.close()
