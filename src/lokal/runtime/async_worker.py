"""Many requests at once on the server's event loop, for engines that wait on I/O (an upstream API).

Up to the engine's capacity run concurrently (for a replica pool: the healthy replicas' max_concurrency, summed);
later ones wait in a bounded FIFO queue, and when that is full the server answers 503 + Retry-After, as for a
local model. Each admitted request's engine generator runs in a task of its own that hands events to the caller
through a queue: a caller that leaves cancels the task, which closes the upstream request at once, and a forced
unload (abort) ends every caller with its error without waiting for the upstream's next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lokal.engines.base import AsyncEngine, GenerationEvent, GenerationRequest
from lokal.errors import EngineError, LokalError, ModelUnloaded, Overloaded
from lokal.runtime.worker import DONE


@dataclass(eq=False, slots=True)  # found in the queue and sets by identity
class _Job:
    source: Callable[[], AsyncIterator[Any]]  # what the task iterates: the engine's events, or one call result
    out: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    admitted: asyncio.Future[None] | None = None  # while it waits for a slot
    task: asyncio.Task[None] | None = None
    error: LokalError | None = None  # set by abort: the caller raises it before reading anything else


class AsyncWorker:
    def __init__(self, engine: AsyncEngine, name: str, queue_size: int = 32) -> None:
        self.engine: AsyncEngine = engine
        self.name = name
        self._queue_size = queue_size
        self._waiting: deque[_Job] = deque()
        self._running: set[_Job] = set()  # generations holding a slot
        self._calls: set[_Job] = set()  # embed, count_tokens: no slot (the pool bounds the upstream requests)
        self._stopped: LokalError | None = None  # set by abort/close: no new work is accepted
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind to the running loop and start the engine (a pool's health checks live as long as the worker)."""
        self._loop = asyncio.get_running_loop()
        await self.engine.start()

    # -- figures -----------------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests waiting plus those running."""
        return len(self._waiting) + len(self._running)

    def stats(self) -> dict[str, int | float]:
        return {"slots": self.engine.capacity, "slots_busy": len(self._running), "waiting": len(self._waiting)}

    def _has_room(self) -> bool:
        # With every replica resting the capacity reads 0; one request at a time still goes, so that callers
        # hear the pool's own error (no replica can answer) instead of waiting in a queue nothing drains.
        return len(self._running) < max(1, self.engine.capacity)

    # -- running jobs ------------------------------------------------------------------------------------------
    def _spawn(self, job: _Job, into: set[_Job]) -> None:
        into.add(job)
        job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"lokal-async-{self.name}")
        job.task.add_done_callback(lambda _: self._finished(job, into))

    async def _run(self, job: _Job) -> None:
        put = job.out.put_nowait
        try:
            async for item in job.source():
                put(item)
        except LokalError as exc:
            put(exc)
        except Exception as exc:  # an engine bug ends its own request, not the worker
            put(EngineError(f"{type(exc).__name__}: {exc}"))
        put(DONE)

    def _finished(self, job: _Job, into: set[_Job]) -> None:
        into.discard(job)
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._waiting and self._has_room():
            job = self._waiting.popleft()
            if job.admitted is None or job.admitted.done():  # its caller left while it waited
                continue
            self._spawn(job, self._running)
            job.admitted.set_result(None)

    def _drop(self, job: _Job) -> None:
        """The caller is done with `job` (finished, failed, or left): free its place now."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(job)
        if job.task is not None and not job.task.done():
            job.task.cancel()  # the engine's generator is closed, and the upstream request with it

    @staticmethod
    async def _take(job: _Job) -> Any:
        """The job's next item (DONE at the end); an error item, or the abort's error, is raised."""
        item = await job.out.get()
        if job.error is not None:
            raise job.error
        if isinstance(item, LokalError):
            raise item
        return item

    def _full(self) -> Overloaded:
        return Overloaded(f"model {self.name!r} has {self.depth} requests queued; try again shortly", retry_after=1)

    # -- the interface the server uses -------------------------------------------------------------------------
    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if self._stopped is not None:
            raise self._stopped
        job = _Job(lambda: self.engine.agenerate(req))
        if self._waiting or not self._has_room():
            if len(self._waiting) >= self._queue_size:
                raise self._full()
            job.admitted = asyncio.get_running_loop().create_future()
            self._waiting.append(job)
            try:
                await job.admitted
            except BaseException:
                self._drop(job)  # gone before its turn (or aborted): it never reaches the upstream
                raise
        else:
            self._spawn(job, self._running)
        try:
            while (item := await self._take(job)) is not DONE:
                yield item
        finally:
            self._drop(job)  # finished, or the client left: the upstream request is closed now

    async def _one(self, fn: Callable[[], Any]) -> Any:
        if self._stopped is not None:
            raise self._stopped

        async def source() -> AsyncIterator[Any]:
            yield ("ok", await fn())

        job = _Job(source)
        self._spawn(job, self._calls)
        result: Any = None
        try:
            while (item := await self._take(job)) is not DONE:
                result = item[1]
        finally:
            self._drop(job)
        return result

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run a sync engine call (count_tokens, embed through the engine's sync face) on a thread: a big input
        must not stall the loop, and the sync face hands its I/O back to this loop."""
        return await self._one(lambda: asyncio.to_thread(fn))

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = await self._one(lambda: self.engine.aembed(texts))
        return result

    def abort(self, error: LokalError) -> None:
        """End every queued and running request and call with `error` now (a forced unload): their callers raise
        it at once and the upstream requests are closed. New work is refused from here on."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if not on_loop:
                loop.call_soon_threadsafe(self.abort, error)
                return
        self._stopped = error
        jobs = [*self._waiting, *self._running, *self._calls]
        self._waiting.clear()
        for job in jobs:
            job.error = error
            if job.admitted is not None and not job.admitted.done():
                job.admitted.set_exception(error)
            job.out.put_nowait(DONE)  # wakes a caller waiting for its next event
            if job.task is not None:
                job.task.cancel()

    async def aclose(self, unload: bool = True) -> None:
        """Finish the running and queued work (none after abort), then close the engine (its pool)."""
        if self._stopped is None:
            self._stopped = ModelUnloaded(f"model {self.name!r} is unloading; try again")
        deadline = time.monotonic() + 30
        while (self._running or self._waiting or self._calls) and time.monotonic() < deadline:
            tasks = [j.task for j in (*self._running, *self._calls) if j.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            else:
                await asyncio.sleep(0.01)  # only queued jobs: they are admitted as the running ones end
        for job in [*self._running, *self._calls]:  # still going after 30 s: stop them rather than wait on
            if job.task is not None:
                job.task.cancel()
        if unload:
            await self.engine.aclose()
            await asyncio.to_thread(self.engine.unload)

    def close(self, unload: bool = True) -> None:
        """The Worker interface's close, for a caller on another thread: runs `aclose` on the worker's loop."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            if unload:
                self.engine.unload()
            return
        asyncio.run_coroutine_threadsafe(self.aclose(unload), loop).result(timeout=60)
