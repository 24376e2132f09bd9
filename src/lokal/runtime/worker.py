"""One engine thread per loaded model, fed by a bounded queue (engines are not thread-safe).

The async server awaits events that the thread hands back through the event loop; a client that goes away sets
the job's cancel flag, which the engine checks between tokens and between prompt chunks. A queued job whose flag
is set never runs. A forced unload (abort) hands every queued and running job an error at once, so no caller
takes a cut answer for a complete one, then lets the thread stop at the running job's next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lokal.engines.base import Engine, GenerationEvent, GenerationRequest
from lokal.errors import EngineError, LokalError, ModelUnloaded, Overloaded

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

    def abort(self, error: LokalError) -> None: ...

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


@dataclass(eq=False, slots=True)  # found in the queue by identity
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
        self._lock = threading.Lock()  # guards _current and _stopped between the engine thread and abort/close
        self._current: _Job | None = None
        self._stopped: LokalError | None = None  # set by abort/close: no new job is accepted
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
            with self._lock:  # abort drains the queue under this lock: a job is either drained or current
                if job.cancel.is_set():
                    job.emit(DONE)
                    continue
                self._current = job
                self._busy = 1
            try:
                job.run(job.cancel, job.emit)
            except LokalError as exc:
                job.emit(exc)
            except Exception as exc:  # an engine bug must not kill the thread that serves everyone else
                job.emit(EngineError(f"{type(exc).__name__}: {exc}"))
            finally:
                with self._lock:
                    self._current = None
                    self._busy = 0
                job.emit(DONE)

    def _submit(self, run: Callable[[threading.Event, Callable[[Any], None]], None]) -> tuple[_Job, asyncio.Queue[Any]]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's event loop is closed: nobody is listening
                loop.call_soon_threadsafe(out.put_nowait, item)

        job = _Job(run=run, emit=emit)
        with self._lock:
            if self._stopped is not None:
                raise self._stopped
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
            self._forget(job)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run any engine call (embed, count_tokens) on the engine thread, in queue order."""

        def run(cancel: threading.Event, emit: Callable[[Any], None]) -> None:
            emit(("ok", fn()))

        job, out = self._submit(run)
        result: Any = None
        try:
            async for item in consume(out):
                result = item[1]
        finally:
            job.cancel.set()  # a caller that left before its turn: the call never runs
            self._forget(job)
        return result

    def _forget(self, job: _Job) -> None:
        """Take a job whose caller left out of the queue now, so that the queue bound (503), `waiting` and
        `depth` count only requests someone still waits for. The engine thread skips it anyway if it got it."""
        q = self._queue
        with q.mutex:  # queue.Queue's own lock over its deque
            try:
                q.queue.remove(job)
            except ValueError:  # already taken by the engine thread
                return
            q.not_full.notify()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = await self.call(lambda: self.engine.embed(texts))
        return result

    def abort(self, error: LokalError) -> None:
        """End every queued and running job with `error` now (a forced unload): their callers raise it at once
        and the engine stops at its next token or prompt chunk. Thread-safe; new jobs are refused from here on."""
        with self._lock:
            self._stopped = error
            jobs = [self._current] if self._current is not None else []
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    jobs.append(job)
        for job in jobs:
            job.cancel.set()
            job.emit(error)  # the caller raises it and reads no further

    def close(self, unload: bool = True) -> None:
        """Stop the thread after the queued work (none after abort); then free the engine."""
        with self._lock:
            if self._stopped is None:
                self._stopped = ModelUnloaded(f"model {self.name!r} is unloading; try again")
        self._queue.put(None)  # never blocks for long: the thread drains the queue, and abort empties it
        self._thread.join(timeout=30)
        if unload and not self._thread.is_alive():  # a thread still inside the engine must not see it freed
            self.engine.unload()
