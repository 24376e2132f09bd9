"""One engine thread that decodes many requests together (continuous batching), behind ModelWorker's interface.

The thread loops: admit waiting requests into free slots, run queued engine calls (embed, count_tokens), decode
one step for every admitted request, hand each request its new events, free the slots of requests that ended
or whose client left. New requests therefore join between steps, and a cancelled one frees its slot at the
next step, whether it was generating or still reading its prompt (the engine reads prompts in chunks of bounded
time). Requests beyond the free slots wait in a bounded queue; when it is full the server answers 503. A queued
request or engine call whose caller left is dropped unrun; a forced unload (abort) ends them all with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lokal.engines.base import Engine, GenerationEvent, GenerationRequest
from lokal.errors import EngineError, LokalError, ModelUnloaded, Overloaded
from lokal.runtime.worker import DONE, consume


class Slotted(Protocol):
    """One request inside a batching engine."""

    @property
    def done(self) -> bool: ...

    def take_events(self) -> list[GenerationEvent]: ...


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """An engine that decodes several sequences per step (llamacpp_batch.BatchedLlamaCppEngine)."""

    slots: int
    steps: int
    prefix_reused_tokens: int
    recent_batch_sizes: deque[int]

    @property
    def batched(self) -> bool: ...

    @property
    def free_slots(self) -> int: ...

    def open(self, req: GenerationRequest) -> Any: ...

    def step(self) -> Sequence[Any]: ...

    def close(self, seq: Any, *, failed: bool = False) -> None: ...


class _Mailbox:
    """Where the engine thread leaves items for one awaiting coroutine."""

    __slots__ = ("loop", "queue")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()


def _deliver(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class _Outbox:
    """Items from one step go to the event loop in one wake-up, not one per token per request: fewer
    cross-thread calls, and the engine thread hands the GIL to the event loop less often."""

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}

    def put(self, box: _Mailbox, item: Any) -> None:
        self._items.setdefault(box.loop, []).append((box.queue, item))

    def flush(self) -> None:
        items, self._items = self._items, {}
        for loop, batch in items.items():
            with contextlib.suppress(RuntimeError):  # that event loop is closed, and its callers with it
                loop.call_soon_threadsafe(_deliver, batch)


@dataclass(slots=True)
class _Request:
    req: GenerationRequest
    box: _Mailbox
    cancel: threading.Event = field(default_factory=threading.Event)
    seq: Any = None  # the engine's sequence once admitted


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    box: _Mailbox
    cancel: threading.Event = field(default_factory=threading.Event)


class BatchWorker:
    def __init__(self, engine: BatchEngine, name: str, queue_size: int = 32) -> None:
        self.engine: BatchEngine = engine
        self.name = name
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._calls: deque[_Call] = deque()
        self._active: list[_Request] = []
        self._closing = False
        self._stopped: LokalError | None = None  # set by abort/close: no new work is accepted
        self._outbox = _Outbox()  # touched by the engine thread only
        self._thread = threading.Thread(target=self._loop, name=f"lokal-batch-{name}", daemon=True)
        self._thread.start()

    # -- figures -----------------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests waiting plus those in a slot."""
        return len(self._waiting) + len(self._calls) + len(self._active)

    def stats(self) -> dict[str, int | float]:
        sizes = list(self.engine.recent_batch_sizes)
        return {
            "slots": self.engine.slots,
            "slots_busy": len(self._active),
            "waiting": len(self._waiting),
            "batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
            "decode_steps": self.engine.steps,
            "prefix_reused_tokens": self.engine.prefix_reused_tokens,
        }

    # -- the engine thread -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._calls or self._active or self._closing):
                    self._cond.wait()
                if self._closing and not (self._waiting or self._calls or self._active):
                    return
                calls = list(self._calls)
                self._calls.clear()
                if any(j.cancel.is_set() for j in self._waiting):  # gone before a slot freed: no longer queued
                    gone = [j for j in self._waiting if j.cancel.is_set()]
                    self._waiting = deque(j for j in self._waiting if not j.cancel.is_set())
                    for job in gone:
                        self._outbox.put(job.box, DONE)
                admitted: list[_Request] = []
                while self._waiting and len(self._active) < self.engine.slots:
                    job = self._waiting.popleft()
                    self._active.append(job)  # counted as busy from here, so the queue bound stays exact
                    admitted.append(job)
            for call in calls:
                self._run_call(call)
            for job in admitted:
                self._admit(job)
            self._drop_cancelled()
            self._outbox.flush()
            if self._active:
                self._step()
                self._outbox.flush()

    def _run_call(self, call: _Call) -> None:
        send = self._outbox.put
        if call.cancel.is_set():  # its caller left while it waited
            send(call.box, DONE)
            return
        try:
            send(call.box, ("ok", call.fn()))
        except LokalError as exc:
            send(call.box, exc)
        except Exception as exc:  # an engine bug must not kill the thread that serves everyone else
            send(call.box, EngineError(f"{type(exc).__name__}: {exc}"))
        finally:
            send(call.box, DONE)

    def _admit(self, job: _Request) -> None:
        if not job.cancel.is_set():
            try:
                job.seq = self.engine.open(job.req)  # prompt too long and the like fail here, before any header
                return
            except Exception as exc:
                err = exc if isinstance(exc, LokalError) else EngineError(f"{type(exc).__name__}: {exc}")
                self._outbox.put(job.box, err)
        with self._cond:
            self._active.remove(job)
        self._outbox.put(job.box, DONE)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._active if j.cancel.is_set()]:
            self._release(job)

    def _release(self, job: _Request, *, failed: bool = False) -> None:
        self.engine.close(job.seq, failed=failed)
        with self._cond:
            self._active.remove(job)
        self._outbox.put(job.box, DONE)

    def _step(self) -> None:
        try:
            self.engine.step()
        except Exception as exc:
            err = exc if isinstance(exc, LokalError) else EngineError(f"{type(exc).__name__}: {exc}")
            for job in list(self._active):  # the batch's state is unknown: every sequence in it ends
                self._outbox.put(job.box, err)
                self._release(job, failed=True)
            return
        for job in list(self._active):
            seq: Slotted = job.seq
            for event in seq.take_events():
                self._outbox.put(job.box, event)
            if seq.done:
                self._release(job)

    # -- the async side ----------------------------------------------------------------------------------------
    def _full(self) -> Overloaded:
        return Overloaded(f"model {self.name!r} has {self.depth} requests queued; try again shortly", retry_after=1)

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        job = _Request(req, _Mailbox())
        with self._cond:
            if self._stopped is not None:
                raise self._stopped
            # Requests a free slot will take at the next step are not queued: a burst may fill every slot.
            if len(self._waiting) >= self._queue_size + max(0, self.engine.slots - len(self._active)):
                raise self._full()
            self._waiting.append(job)
            self._cond.notify()
        try:
            async for item in consume(job.box.queue):
                yield item
        finally:
            job.cancel.set()  # client gone or finished: the slot is freed at the next step

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run any engine call (embed, count_tokens) on the engine thread, between two decode steps."""
        call = _Call(fn, _Mailbox())
        with self._cond:
            if self._stopped is not None:
                raise self._stopped
            if len(self._calls) >= self._queue_size:
                raise self._full()
            self._calls.append(call)
            self._cond.notify()
        result: Any = None
        try:
            async for item in consume(call.box.queue):
                result = item[1]
        finally:
            call.cancel.set()
        return result

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = await self.call(lambda: self.engine.embed(texts))
        return result

    def abort(self, error: LokalError) -> None:
        """End every queued and admitted request and queued call with `error` now (a forced unload): their
        callers raise it at once; the engine thread drops them at its next step. Thread-safe."""
        with self._cond:
            self._stopped = error
            jobs: list[_Request | _Call] = [*self._waiting, *self._active, *self._calls]
            for job in jobs:
                job.cancel.set()
            self._cond.notify()
        for job in jobs:
            with contextlib.suppress(RuntimeError):  # that caller's event loop is closed, and the caller with it
                job.box.loop.call_soon_threadsafe(job.box.queue.put_nowait, error)

    def close(self, unload: bool = True) -> None:
        """Finish the admitted and queued work (none after abort), stop the thread, then free the engine."""
        with self._cond:
            self._closing = True
            if self._stopped is None:
                self._stopped = ModelUnloaded(f"model {self.name!r} is unloading; try again")
            self._cond.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():  # still generating after 30 s: stop the requests rather than wait on
            with self._cond:
                for job in [*self._waiting, *self._active]:
                    job.cancel.set()
            self._thread.join(timeout=10)
        if unload and not self._thread.is_alive():
            self.engine.unload()
