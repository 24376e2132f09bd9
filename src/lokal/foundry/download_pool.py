"""Server-side downloads run on a few threads of their own, never on asyncio's default thread pool.

Model loads (and other blocking work) use `asyncio.to_thread`, i.e. the default executor: min(32, CPUs + 4)
threads, six on a 2-core machine. A download holds its thread for minutes, or for the whole read timeout when
its server stalls, so eight stalled downloads once filled that pool and a chat that needed a model load waited
behind them. Here at most WORKERS downloads run at once; later ones wait their turn in this pool's queue
(holding no thread; the progress stream says they wait) instead of being refused.

The threads are daemons: a download stalled in a read must not hold the process open at exit (the `.part`
it leaves is what a kill -9 would leave, and the next download resumes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

# Downloads are network-bound: a few in parallel use the link well; more only split it and hold threads.
WORKERS = 3

_Job = tuple["Future[Any]", Callable[[], Any]]


class _Waiter(asyncio.Future[T]):
    """The caller's side of a job. `asyncio.wrap_future` passes a cancel on to the thread's future only on a
    later loop turn, and a worker freed in between would start the job the caller had just dropped; this one
    cancels the job's future at once."""

    def __init__(self, job: Future[T], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._job = job
        job.add_done_callback(self._from_thread)

    def cancel(self, msg: Any = None) -> bool:
        self._job.cancel()  # a running job ignores this; its cancel event stops it
        return super().cancel(msg)

    def _from_thread(self, job: Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.get_loop().call_soon_threadsafe(self._copy, job)

    def _copy(self, job: Future[T]) -> None:
        if self.done():
            return
        if job.cancelled():
            super().cancel()
        elif (exc := job.exception()) is not None:
            self.set_exception(exc)
        else:
            self.set_result(job.result())


class DownloadPool:
    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cancels: set[threading.Event] = set()  # one per job not finished: close() stops them all
        self._threads: list[threading.Thread] = []  # started on first use: most apps never download
        self._closed = False

    def waiting(self) -> int:
        """How many downloads are queued behind the running ones."""
        with self._lock:
            return max(0, len(self._cancels) - self.workers)

    def submit(self, job: Callable[[], T], cancel: threading.Event) -> asyncio.Future[T]:
        """Run `job` on a download thread. Cancelling the returned future drops a job that has not started;
        a running one stops when it next checks `cancel` (set it too)."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the download pool is closed: the server is shutting down")
            self._cancels.add(cancel)
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._work, name=f"lokal-download-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for thread in self._threads:
                    thread.start()
        future.add_done_callback(lambda _: self._forget(cancel))  # runs on cancellation too
        waiter = _Waiter(future, asyncio.get_running_loop())
        self._jobs.put((future, job))
        return waiter

    def _forget(self, cancel: threading.Event) -> None:
        with self._lock:
            self._cancels.discard(cancel)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if self._closed:
                future.cancel()
                continue
            if not future.set_running_or_notify_cancel():  # cancelled while it waited
                continue
            try:
                future.set_result(job())
            except Exception as exc:  # the caller reads it from the future
                future.set_exception(exc)

    def close(self) -> None:
        """Stop every download (their `.part` files stay), drop queued ones, refuse new ones. Does not wait."""
        with self._lock:
            self._closed = True
            for cancel in self._cancels:
                cancel.set()
            threads = list(self._threads)
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in threads:
            self._jobs.put(None)
