"""The router served as a model: ``model="auto"`` (or a preset name) in ``/v1/chat/completions``.

The server owns local inference; this class owns the routing decision, remote calls, the cache, failure
memory, budgets and the trace. API for the server:

``ServedRouter.from_home(home, local_aliases, loaded, *, capabilities=None, local_call=None)``
    ``home``: LOKAL_HOME. The catalog is ``home/"router.yaml"`` (or ``router.json``), hot-reloaded; without
    one, a default is derived from ``local_aliases()`` every few seconds. ``local_aliases()`` returns chat
    aliases as ``str`` or as objects with ``.alias``, ``.capabilities``, ``.context_length`` and optionally
    ``.task`` (a ``ModelSpec`` works; embedding models are skipped). For plain strings ``capabilities(alias)``
    supplies the capabilities (default ``["general"]``). ``loaded()`` returns the aliases loaded now
    (residency ranks them first). ``local_call(alias, messages, params, timeout_s) -> ChatResult`` runs one
    local chat completion; it is needed only by :meth:`complete`. Traces go to ``home/"traces"/
    "router-YYYYMMDD.jsonl"``; the response cache lives in memory.

``names() -> list[str]``
    Router model names: ``"auto"`` and the catalog's presets. List them in ``/v1/models``.
``is_router_model(name) -> bool``
``warm() -> bool``
    Load MiniLM and encode the intent examples (~2 s; 10-15 s the first time, when it is exported to ONNX);
    call once at startup in a thread, or let the first request pay. False: no embedder, rules only.
``plan(name, messages, *, max_tokens=None) -> RouteDecision``
    ``decision.intent``, ``.confidence``, ``.method``, ``.escalated``, ``.reason``, ``.trace_id`` and
    ``.candidates``: ordered ``Candidate(model, upstream_model, endpoint, endpoint_name, role)``, fallbacks
    included; ``endpoint`` is ``None`` for a local alias (serve ``upstream_model`` yourself), else the
    upstream base URL (call it with :meth:`call`). Raises ``ModelNotFound`` for an unknown router name and
    ``NoRouteAvailable`` (503) when no model can take the request.
``call(candidate, messages, params) -> ChatResult``
    One call to a remote candidate (blocking; run it in a thread). Raises ``CallFailed`` (``.retryable``).
``cache_get(candidate, messages, params) -> CachedResponse | None`` / ``cache_put(candidate, messages, params,
    content, usage)``: only when the catalog's cache policy allows (by default: temperature 0 or a seed).
``failed(model, error, *, cool=True)``
    Tell the router a candidate failed (it is tried last for ``policy.cooldown_s``), then try the next one.
``record(decision, model_used, latency_ms, usage, error, fallback_used, cache_hit) -> TraceEvent``
    Once per request, after it finished (streamed or not). ``usage``: ``(prompt, completion)`` tokens, a
    dict with those keys, an object with those attributes, or None. Writes the trace line and charges
    the budget ledger.
``status() -> dict``
    Catalog source and last reload error, cache hit stats, models cooling down or over budget.
``complete(name, messages, params) -> RoutedResult``
    Everything above in one blocking call (non-streaming requests): plan, cache, retries with backoff,
    fallbacks, cooldowns, trace. ``result.content``, ``.model`` (put it in the response's ``model`` field and
    an ``x-lokal-routed-model`` header), ``.decision``, ``.prompt_tokens``, ``.completion_tokens``.

Wired already: ``lokal.router.server.install(app, state)`` (loaded by ``lokal.server.extensions``) builds
this from ``state`` and sets ``state.router``. Response convention: ``model`` = the alias that answered
(non-streamed; streamed chunks keep the engine's id), a ``lokal_router`` field, plus ``x-lokal-router``,
``x-lokal-routed-model``, ``x-lokal-intent`` and ``x-lokal-trace-id`` headers (:func:`response_headers`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from lokal.errors import LokalError, ModelNotFound, Overloaded
from lokal.router.cache import CachedResponse, ResponseCache, cache_key, is_deterministic
from lokal.router.catalog import CatalogStore, RouterCatalog, catalog_from_local_models
from lokal.router.engine import IntentEngine
from lokal.router.policy import Candidate, RouteDecision
from lokal.router.router import AUTO, LocalCall, NoRouteAvailable, RoutedResult, Router
from lokal.router.trace import TraceEvent, TraceWriter
from lokal.router.upstream import CallFailed, ChatResult

__all__ = [
    "CallFailed",
    "Candidate",
    "ChatResult",
    "NoRouteAvailable",
    "RouteDecision",
    "RoutedResult",
    "ServedRouter",
    "find_catalog_file",
    "response_headers",
]

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


def _usage_pair(usage: Any) -> tuple[int, int] | None:
    if usage is None:
        return None
    if isinstance(usage, tuple):
        return int(usage[0]), int(usage[1])
    if isinstance(usage, Mapping):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def response_headers(result_or_decision: RoutedResult | RouteDecision, model_used: str | None = None) -> dict[str, str]:
    if isinstance(result_or_decision, RoutedResult):
        decision, model_used = result_or_decision.decision, result_or_decision.model
    else:
        decision = result_or_decision
    headers = {
        "x-lokal-router": decision.router,
        "x-lokal-intent": decision.intent,
        "x-lokal-trace-id": decision.trace_id,
    }
    if model_used:
        headers["x-lokal-routed-model"] = model_used
    return headers


def _wrap_local(fn: LocalCall) -> LocalCall:
    """Turn the server's own errors into the router's retry / fall-back vocabulary."""

    def call(
        model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], timeout: float
    ) -> ChatResult:
        try:
            return fn(model, messages, params, timeout)
        except CallFailed:
            raise
        except Overloaded as exc:
            raise CallFailed(exc.message, retryable=True, cool=False, status=exc.status_code) from None
        except LokalError as exc:
            server_side = exc.status_code >= 500
            raise CallFailed(exc.message, retryable=False, cool=server_side, status=exc.status_code) from None
        except TimeoutError:
            raise CallFailed(f"timed out after {timeout:g}s", retryable=False, cool=True) from None

    return call


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
        local_call: LocalCall | None = None,
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
            local_call=_wrap_local(local_call) if local_call is not None else None,
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

    def call(
        self, candidate: Candidate, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> ChatResult:
        if candidate.endpoint is None:
            raise CallFailed(f"{candidate.model} is local: serve it in-process", retryable=False, cool=False)
        cat = self.router.catalog
        endpoint = cat.endpoint_for(candidate.model, "")
        timeout = cat.models[candidate.model].timeout_s or endpoint.timeout_s or cat.policy.timeout_s
        return self.router.clients.chat(endpoint, candidate.upstream_model, messages, params, timeout)

    def _cache_key(
        self, candidate: Candidate, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> str | None:
        pol = self.router.catalog.policy.cache
        if self.router.cache is None or not pol.enabled or (pol.only_deterministic and not is_deterministic(params)):
            return None
        return cache_key(f"{candidate.upstream_model}@{candidate.endpoint}", messages, params)

    def cache_get(
        self, candidate: Candidate, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> CachedResponse | None:
        key = self._cache_key(candidate, messages, params)
        return self.router.cache.get(key) if key is not None and self.router.cache is not None else None

    def cache_put(
        self,
        candidate: Candidate,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        content: str,
        usage: Any,
    ) -> None:
        key = self._cache_key(candidate, messages, params)
        if key is not None and self.router.cache is not None:
            pt, ct = _usage_pair(usage) or (0, 0)
            self.router.cache.put(key, CachedResponse(content, pt, ct, candidate.model))

    def failed(self, model: str, error: str, *, cool: bool = True) -> None:
        if cool:
            self.router.cooldowns.fail(model, self.router.catalog.policy.cooldown_s)

    def record(
        self,
        decision: RouteDecision,
        model_used: str | None,
        latency_ms: float,
        usage: Any,
        error: str | None,
        fallback_used: bool,
        cache_hit: bool,
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> TraceEvent:
        if model_used is not None and error is None:
            self.router.cooldowns.ok(model_used)
        return self.router.record(
            decision,
            model_used,
            latency_ms,
            _usage_pair(usage),
            error,
            fallback_used,
            cache_hit,
            messages=messages,
        )

    def complete(
        self, name: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None
    ) -> RoutedResult:
        if not self.is_router_model(name):
            raise ModelNotFound(f"{name!r} is not a router model (known: {', '.join(self.names())})")
        return self.router.complete(messages, router=name, params=params)

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
