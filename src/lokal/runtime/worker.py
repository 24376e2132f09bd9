"""One engine thread per loaded model, fed by a bounded queue (engines are not thread-safe).

The async server awaits events that the thread hands back through the event loop; a client that goes away sets
the job's cancel flag, which the engine checks between tokens.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lokal.engines.base import Engine, GenerationEvent, GenerationRequest
from lokal.errors import EngineError, LokalError, Overloaded

Emit = Callable[[Any], None]  # hands an item from the engine thread to the awaiting coroutine
DONE = object()  # the last item of every job


class Worker(Protocol):
    """What the server needs from the thread that owns a loaded engine (ModelWorker, BatchWorker)."""

    name: str

    @property
    def engine(self) -> Engine: ...

    @property
    def depth(self) -> int: ...

    def stats(self) -> dict[str, int | float]: ...

    def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

    async def call(self, fn: Callable[[], Any]) -> Any: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def close(self, unload: bool = True) -> None: ...


async def consume(out: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """The items a job emits, up to DONE; an error item is raised."""
    while True:
        item = await out.get()
        if item is DONE:
            return
        if isinstance(item, LokalError):
            raise item
        yield item


@dataclass(slots=True)
class _Job:
    run: Callable[[threading.Event, Emit], None]
    emit: Emit
    cancel: threading.Event = field(default_factory=threading.Event)


class ModelWorker:
    def __init__(self, engine: Engine, name: str, queue_size: int = 32) -> None:
        self.engine = engine
        self.name = name
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._busy = 0
        self._thread = threading.Thread(target=self._loop, name=f"lokal-engine-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting plus the one running."""
        return self._queue.qsize() + self._busy

    def stats(self) -> dict[str, int | float]:
        return {"slots": 1, "slots_busy": self._busy, "waiting": self._queue.qsize()}

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancel.is_set():
                job.emit(DONE)
                continue
            self._busy = 1
            try:
                job.run(job.cancel, job.emit)
            except LokalError as exc:
                job.emit(exc)
            except Exception as exc:  # an engine bug must not kill the thread that serves everyone else
                job.emit(EngineError(f"{type(exc).__name__}: {exc}"))
            finally:
                self._busy = 0
                job.emit(DONE)

    def _submit(self, run: Callable[[threading.Event, Callable[[Any], None]], None]) -> tuple[_Job, asyncio.Queue[Any]]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        job = _Job(run=run, emit=emit)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(
                f"model {self.name!r} has {self.depth} requests queued; try again shortly", retry_after=1
            ) from None
        return job, out

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        def run(cancel: threading.Event, emit: Callable[[Any], None]) -> None:
            for event in self.engine.generate(req, cancel):
                emit(event)

        job, out = self._submit(run)
        try:
            async for item in consume(out):
                yield item
        finally:
            job.cancel.set()  # client gone or finished: the engine stops at its next token

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run any engine call (embed, count_tokens) on the engine thread, in queue order."""

        def run(cancel: threading.Event, emit: Callable[[Any], None]) -> None:
            emit(("ok", fn()))

        _, out = self._submit(run)
        result: Any = None
        async for item in consume(out):
            result = item[1]
        return result

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = await self.call(lambda: self.engine.embed(texts))
        return result

    def close(self, unload: bool = True) -> None:
        """Stop the thread after the queued work; then free the engine on that same thread's behalf."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        if unload:
            self.engine.unload()
