"""Building a client-side router session for the CLI (or a script): catalog file or a default from the server."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from lokal.router.cache import ResponseCache
from lokal.router.catalog import CatalogStore, RouterCatalog, catalog_from_local_models
from lokal.router.engine import IntentEngine
from lokal.router.router import Router
from lokal.router.serving import find_catalog_file
from lokal.router.session import RouterSession
from lokal.router.trace import TraceWriter

log = logging.getLogger(__name__)


def models_from_server(base_url: str, api_key: str | None = None, timeout_s: float = 5.0) -> RouterCatalog:
    """A default catalog from ``GET {base_url}/models``: chat models with the capabilities the server lists
    (lokal lists ``capabilities``, ``task`` and ``context_length`` under each entry's ``lokal`` key; models
    from other servers get ``["general"]``). Router models ("auto", presets) and embedding models are skipped."""
    headers = {"Authorization": f"Bearer {api_key or 'not-needed'}"}
    try:
        r = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=timeout_s)
        r.raise_for_status()
        items = r.json().get("data", [])
    except (httpx.HTTPError, ValueError) as exc:
        raise httpx.HTTPError(f"no router catalog file, and {base_url}/models is unavailable ({exc})") from None
    entries = []
    for item in items:
        extra = item.get("lokal") if isinstance(item.get("lokal"), dict) else item
        task = str(extra.get("task") or "chat-completion")
        if extra.get("router") or "embed" in task:
            continue
        caps = [str(c) for c in extra.get("capabilities") or ["general"]]
        entries.append((str(item["id"]), caps, int(extra.get("context_length") or 4096)))
    return catalog_from_local_models(entries)


def build_router(
    *,
    home: Path,
    base_url: str,
    catalog_path: Path | None = None,
    trace_path: Path | None = None,
    cache_path: Path | None = None,
    api_key: str | None = None,
    intents: IntentEngine | None = None,
    cache: bool = True,
) -> RouterSession:
    """``base_url``: the lokal server (``http://host:port/v1``), home of the models whose endpoint is "local".
    ``cache_path``: SQLite file that keeps cached responses across runs (default: in memory only);
    ``cache=False``: neither reuse nor keep answers."""
    path = catalog_path or find_catalog_file(home)
    default = None if path.is_file() else models_from_server(base_url, api_key)
    store = CatalogStore(path, default)
    pol = store.get().policy.cache
    router = Router(
        store,
        local_base_url=base_url,
        intents=intents or IntentEngine(home),
        trace=TraceWriter(trace_path) if trace_path is not None else None,
        cache=ResponseCache(pol.max_entries, pol.ttl_s, cache_path) if cache else None,
    )
    return RouterSession(router)
