"""The router served as a model: ``model="auto"`` (or a preset name) in ``/v1/chat/completions``.

The server owns local inference; this class owns the routing state: the hot-reloaded catalog
(``home/"router.yaml"`` or ``router.json``; without one, a default derived from ``local_aliases()`` every few
seconds), intent detection, residency (``loaded()``: the aliases loaded now rank first), the response cache
(in memory), failure memory, budgets and the daily trace (``home/"traces"/"router-YYYYMMDD.jsonl"``).
lokal.router.server runs requests through lokal.router.executor against it.

``local_aliases()`` returns chat aliases as ``str`` or as objects with ``.alias``, ``.capabilities``,
``.context_length`` and optionally ``.task`` (a ``ModelSpec`` works; embedding models are skipped); for plain
strings ``capabilities(alias)`` supplies the capabilities (default ``["general"]``).

Response convention: ``model`` = the alias that answered (streamed chunks too), a ``lokal_router`` field on
whole answers, plus ``x-lokal-router``, ``x-lokal-routed-model``, ``x-lokal-intent`` and ``x-lokal-trace-id``
headers (:func:`response_headers`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from lokal.errors import ModelNotFound
from lokal.router.cache import ResponseCache
from lokal.router.catalog import CatalogStore, RouterCatalog, catalog_from_local_models
from lokal.router.engine import IntentEngine
from lokal.router.executor import response_headers
from lokal.router.policy import RouteDecision
from lokal.router.router import AUTO, Router
from lokal.router.trace import TraceEvent, TraceWriter

__all__ = ["ServedRouter", "find_catalog_file", "response_headers"]

CATALOG_NAMES = ("router.yaml", "router.yml", "router.json")


class _LocalModel(Protocol):
    alias: str
    capabilities: list[str]
    context_length: int


def find_catalog_file(home: Path) -> Path:
    for name in CATALOG_NAMES:
        if (home / name).is_file():
            return home / name
    return home / CATALOG_NAMES[0]


def _local_entries(
    items: Iterable[Any], capabilities: Callable[[str], Sequence[str]] | None
) -> list[tuple[str, list[str], int]]:
    out = []
    for item in items:
        if isinstance(item, str):
            caps = list(capabilities(item)) if capabilities else ["general"]
            out.append((item, caps, 4096))
        elif getattr(item, "task", "chat-completion") == "chat-completion":
            out.append((item.alias, list(item.capabilities), int(getattr(item, "context_length", 4096))))
    return out


class ServedRouter:
    def __init__(self, router: Router, trace_dir: Path) -> None:
        self.router = router
        self.trace_dir = trace_dir

    @classmethod
    def from_home(
        cls,
        home: Path,
        local_aliases: Callable[[], Iterable[str | _LocalModel]],
        loaded: Callable[[], set[str]],
        *,
        capabilities: Callable[[str], Sequence[str]] | None = None,
        intents: IntentEngine | None = None,
    ) -> ServedRouter:
        def default() -> RouterCatalog:
            return catalog_from_local_models(_local_entries(local_aliases(), capabilities))

        store = CatalogStore(find_catalog_file(home), default)
        trace_dir = home / "traces"

        def resident(cat: RouterCatalog) -> set[str]:
            names = loaded()
            return {n for n, e in cat.models.items() if cat.is_local(n) and (e.upstream_model or n) in names}

        router = Router(
            store,
            local_base_url=None,
            intents=intents or IntentEngine(home),
            resident=resident,
            trace=_DailyTrace(trace_dir),
            cache=ResponseCache(store.get().policy.cache.max_entries, store.get().policy.cache.ttl_s),
        )
        return cls(router, trace_dir)

    def names(self) -> list[str]:
        return self.router.names()

    def is_router_model(self, name: str) -> bool:
        return name == AUTO or name in self.router.catalog.presets

    def warm(self) -> bool:
        return self.router.intents.warm()

    def plan(self, name: str, messages: Sequence[Mapping[str, Any]], *, max_tokens: int | None = None) -> RouteDecision:
        if not self.is_router_model(name):
            raise ModelNotFound(f"{name!r} is not a router model (known: {', '.join(self.names())})")
        return self.router.plan(messages, router=name, max_tokens=max_tokens)

    def status(self) -> dict[str, Any]:
        """For ``GET /lokal/router``: where the catalog comes from, its last error, cache and health."""
        store = self.router.store
        return {
            "names": self.names(),
            "catalog": "default (local models)" if store.using_default else str(store.path),
            "catalog_error": store.last_error.message if store.last_error else None,
            "models": sorted(self.router.catalog.models),
            "encoder": self.router.intents.encoder_name or "not loaded",
            "cache": self.cache_stats,
            "cooling": {m: round(s, 1) for m, s in self.router.cooldowns.cooling().items()},
            "over_budget": self.router.ledger.over_budget(self.router.catalog),
            "traces": str(self.trace_dir),
        }

    @property
    def cache_stats(self) -> dict[str, float]:
        if self.router.cache is None:
            return {}
        s = self.router.cache.stats()
        return {"hits": s.hits, "misses": s.misses, "entries": s.entries, "hit_rate": s.hit_rate}

    def close(self) -> None:
        self.router.close()


class _DailyTrace(TraceWriter):
    """One file per day, so a long-running server does not grow one file forever."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / "router.jsonl")
        self.folder = folder

    def write(self, event: TraceEvent) -> None:
        self.path = self.folder / f"router-{time.strftime('%Y%m%d', time.localtime(event.ts))}.jsonl"
        super().write(event)
