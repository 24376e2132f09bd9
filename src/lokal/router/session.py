"""The router for synchronous callers (the CLI, pipelines, scripts): the async executor on one event loop kept
for the session, so pooled HTTP connections live across calls. No routing logic of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from lokal.router.cache import ResponseCache
from lokal.router.catalog import RouterCatalog
from lokal.router.executor import Executor, RoutedRequest, RoutedResult, RoutedStream
from lokal.router.policy import RouteDecision
from lokal.router.router import Router

T = TypeVar("T")
_END = object()


async def _next(it: AsyncIterator[T]) -> T | object:
    try:
        return await anext(it)
    except StopAsyncIteration:
        return _END


class RouterSession:
    def __init__(
        self,
        router: Router,
        *,
        executor: Executor | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.router = router
        self.executor = executor or (Executor(router, sleep=sleep) if sleep is not None else Executor(router))
        self._runner = asyncio.Runner()

    @property
    def catalog(self) -> RouterCatalog:
        return self.router.catalog

    @property
    def cache(self) -> ResponseCache | None:
        return self.router.cache

    def plan(self, messages: Sequence[Mapping[str, Any]], **kw: Any) -> RouteDecision:
        return self.router.plan(messages, **kw)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator read from synchronous code, one item per step of the session's loop."""
        try:
            while (item := self.run(_next(items))) is not _END:
                yield item  # type: ignore[misc]
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                self.run(close())

    def complete(self, messages: Sequence[Mapping[str, Any]], **kw: Any) -> RoutedResult:
        return self.run(self.executor.complete(RoutedRequest(messages, **kw)))

    def stream(self, messages: Sequence[Mapping[str, Any]], **kw: Any) -> SyncStream:
        return SyncStream(self, self.run(self.executor.stream(RoutedRequest(messages, **kw))))

    def close(self) -> None:
        try:
            self.run(self.executor.aclose())
        finally:
            self._runner.close()
            self.router.close()


class SyncStream:
    """Iterate for the text as it arrives; ``result`` once it ended. ``model``, ``decision`` and
    ``fallback_used`` are known from the start (the candidate was chosen before the first chunk)."""

    def __init__(self, session: RouterSession, stream: RoutedStream) -> None:
        self.session, self.stream = session, stream
        self.model, self.decision, self.fallback_used = stream.model, stream.decision, stream.fallback_used

    def __iter__(self) -> Iterator[str]:
        for d in self.session.iterate(self.stream):
            if d.text:
                yield d.text

    @property
    def result(self) -> RoutedResult | None:
        return self.stream.result

    def close(self) -> None:
        self.session.run(self.stream.aclose())


__all__ = ["RouterSession", "SyncStream"]
