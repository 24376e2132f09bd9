"""Which worker drives a loaded engine, from what the engine is (its traits' `concurrency`), not its name."""

from __future__ import annotations

from lokal.engine_traits import Concurrency
from lokal.engines.base import AsyncEngine, Engine
from lokal.runtime.async_worker import AsyncWorker
from lokal.runtime.batch_worker import BatchEngine, BatchWorker
from lokal.runtime.worker import ModelWorker, Worker


def make_worker(engine: Engine, name: str, queue_size: int = 32, *, concurrency: Concurrency = "thread") -> Worker:
    """By the traits: "async" runs requests at once on the event loop; "batch" is the batching worker when the engine
    loaded with several slots (with one it is one request at a time); "thread" runs one at a time on a thread."""
    if concurrency == "async":
        if not isinstance(engine, AsyncEngine):
            raise TypeError(f"{type(engine).__name__} is registered as an async engine but has no agenerate/start")
        return AsyncWorker(engine, name, queue_size)
    if concurrency == "batch" and isinstance(engine, BatchEngine) and engine.batched and engine.slots > 1:
        return BatchWorker(engine, name, queue_size)
    return ModelWorker(engine, name, queue_size)
