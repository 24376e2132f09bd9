"""Which models are already loaded: a loaded model answers now, a cold one pays its load time first.

Only lokal-kind endpoints are asked: ``GET {root}/lokal/ps`` (aliases and ids), then ``GET
{root}/openai/loadedmodels`` (Foundry Local's contract: a list of model ids). Servers without either are
tolerated: nothing counts as resident. For Foundry, set ``upstream_model`` to the id it reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from lokal.router.catalog import Endpoint, RouterCatalog


def _names_from_loadedmodels(data: object) -> set[str]:
    names: set[str] = set()
    items = data.get("models", data.get("data", [])) if isinstance(data, dict) else data
    if isinstance(items, list):
        for item in items:
            if isinstance(item, str):
                names.add(item)
            elif isinstance(item, dict):
                names.update(str(item[k]) for k in ("alias", "id", "name", "model") if item.get(k))
    # Foundry ids carry a version and device ("phi-4-mini-cpu:1"); an alias matches its id's base name too.
    names.update(n.split(":", 1)[0] for n in list(names))
    return names


class ResidencyProbe:
    def __init__(
        self,
        ttl_s: float = 2.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def loaded_at(self, endpoint: Endpoint) -> set[str]:
        if endpoint.kind != "lokal":
            return set()
        key = endpoint.root
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        names = self._ask(endpoint)
        with self._lock:
            self._cache[key] = (now, names)
        return names

    def _ask(self, endpoint: Endpoint) -> set[str]:
        headers = {"Authorization": f"Bearer {endpoint.api_key()}"}
        for path in ("/lokal/ps", "/openai/loadedmodels"):
            try:
                r = self._client.get(endpoint.root + path, headers=headers)
                if r.status_code == 200:
                    return _names_from_loadedmodels(r.json())
            except (httpx.HTTPError, ValueError):
                # Down or not lokal: one failed probe per TTL is cheap; a router that cannot route is not.
                continue
        return set()

    def resident(self, catalog: RouterCatalog, local_base_url: str) -> set[str]:
        """Catalog names whose model is loaded at its endpoint."""
        out: set[str] = set()
        for name, entry in catalog.models.items():
            loaded = self.loaded_at(catalog.endpoint_for(name, local_base_url))
            if name in loaded or (entry.upstream_model is not None and entry.upstream_model in loaded):
                out.add(name)
        return out

    def close(self) -> None:
        self._client.close()
