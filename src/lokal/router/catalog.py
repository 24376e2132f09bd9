"""The router's capability catalog: which model can do what, where it lives, what it costs, what backs it up.

A YAML or JSON file (default ``$LOKAL_HOME/router.yaml``)::

    endpoints:                       # "local" (the lokal server) exists without being declared
      gpu-box: {base_url: "http://gpu-box:8000/v1", api_key_env: GPU_KEY, kind: openai}
    models:
      phi-4-mini:
        capabilities: [general, reasoning, summarize]
        priority: 2                  # lower is preferred
        cost_per_1m: 0.0             # notional $ per 1M tokens (cost_per_1m_output overrides for output)
        max_context: 4096
        endpoint: local
        fallbacks: [qwen2.5-0.5b]
        tier: 1                      # bigger = larger model; escalation prefers higher tiers
    policy: {detector: combined, escalation: {to: [big-model]}}
    budgets: [{tag: remote, max_cost_usd: 5, period_s: 86400}]
    presets: {auto-local: {local_only: true}}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lokal.config import env_value
from lokal.errors import InvalidRequest

log = logging.getLogger(__name__)

LOCAL_ENDPOINT = "local"

KNOWN_CAPABILITIES: frozenset[str] = frozenset(
    {
        "general",
        "reasoning",
        "summarize",
        "code",
        "refactor",
        "explain_code",
        "classification",
        "extraction",
        "translation",
        "math",
        "creative",
        "fast",
        "lightweight",
        "long_context",
        "tools",
        "vision",
    }
)

DetectorMode = Literal["rules", "semantic", "combined"]


class CatalogError(InvalidRequest):
    """The catalog file is unreadable or inconsistent; ``problems`` lists every finding, one per line."""

    code = "invalid_router_catalog"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"router catalog {source} is invalid:\n{body}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoint(_Strict):
    base_url: str
    api_key_env: str | None = None
    # "lokal" endpoints answer residency questions (/openai/loadedmodels, /lokal/ps); others are not asked.
    kind: Literal["lokal", "openai"] = "openai"
    timeout_s: float | None = None

    def api_key(self) -> str:
        # The official client insists on a key even where the server ignores it.
        return (env_value(self.api_key_env) if self.api_key_env else None) or "not-needed"

    @property
    def root(self) -> str:
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


class ModelEntry(_Strict):
    capabilities: list[str] = Field(default_factory=lambda: ["general"])
    priority: int = 5
    cost_per_1m: float = 0.0
    cost_per_1m_output: float | None = None
    max_context: int = 4096
    endpoint: str = LOCAL_ENDPOINT
    upstream_model: str | None = None  # the name the endpoint knows it by; default: the catalog key
    fallbacks: list[str] = Field(default_factory=list)
    tier: int = 0
    tags: list[str] = Field(default_factory=list)
    timeout_s: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        out_rate = self.cost_per_1m if self.cost_per_1m_output is None else self.cost_per_1m_output
        return (prompt_tokens * self.cost_per_1m + completion_tokens * out_rate) / 1e6


class Escalation(_Strict):
    enabled: bool = True
    long_prompt_tokens: int = 1500
    # Regexes (case-insensitive) for topics that deserve the larger model.
    topics: list[str] = Field(default_factory=lambda: [r"\bsecurity\b", r"\bcomplian", r"\boptimi[sz]"])
    min_confidence: float = 0.35
    to: list[str] = Field(default_factory=list)  # explicit targets, tried first; else the highest tier


class CachePolicy(_Strict):
    enabled: bool = True
    # Sampled output (temperature > 0 without a seed) is meant to vary; caching it would change the contract.
    only_deterministic: bool = True
    max_entries: int = 1024
    ttl_s: float | None = None


class Policy(_Strict):
    detector: DetectorMode = "combined"
    escalation: Escalation = Field(default_factory=Escalation)
    retries: int = 1
    backoff_s: float = 0.25
    timeout_s: float = 120.0
    cooldown_s: float = 30.0
    cache: CachePolicy = Field(default_factory=CachePolicy)


class Budget(_Strict):
    model: str | None = None
    tag: str | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    period_s: float | None = None  # None: for the life of the process

    def applies_to(self, name: str, entry: ModelEntry) -> bool:
        return (self.model is not None and self.model == name) or (self.tag is not None and self.tag in entry.tags)


class Preset(_Strict):
    """A named router model ("auto-local", "auto-fast") that narrows or tilts the default policy."""

    description: str = ""
    models: list[str] | None = None  # only these
    local_only: bool = False
    prefer: list[str] = Field(default_factory=list)  # capabilities ranked ahead of priority
    detector: DetectorMode | None = None
    escalation: bool | None = None
    intent: str | None = None  # force one intent (skips detection)


class RouterCatalog(_Strict):
    version: int = 1
    capabilities: list[str] = Field(default_factory=list)  # custom capabilities beyond KNOWN_CAPABILITIES
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    models: dict[str, ModelEntry]
    policy: Policy = Field(default_factory=Policy)
    budgets: list[Budget] = Field(default_factory=list)
    presets: dict[str, Preset] = Field(default_factory=dict)

    @property
    def all_capabilities(self) -> frozenset[str]:
        return KNOWN_CAPABILITIES | frozenset(self.capabilities)

    def endpoint_for(self, name: str, local_base_url: str) -> Endpoint:
        entry = self.models[name]
        if entry.endpoint in self.endpoints:
            return self.endpoints[entry.endpoint]
        return Endpoint(base_url=local_base_url, kind="lokal", api_key_env="LOKAL_API_KEY")

    def is_local(self, name: str) -> bool:
        return self.models[name].endpoint == LOCAL_ENDPOINT and LOCAL_ENDPOINT not in self.endpoints

    def with_capability(self, capability: str) -> list[str]:
        return [n for n, m in self.models.items() if capability in m.capabilities]

    def problems(self) -> list[str]:
        """Every semantic inconsistency, phrased so the user can fix the file without reading code."""
        found: list[str] = []
        known = self.all_capabilities
        if not self.models:
            found.append("models: the catalog declares no models")
        declared_endpoints = set(self.endpoints) | {LOCAL_ENDPOINT}
        for name, m in self.models.items():
            for cap in m.capabilities:
                if cap not in known:
                    found.append(
                        f"models.{name}.capabilities: unknown capability {cap!r} "
                        f"(known: {', '.join(sorted(known))}; declare custom ones under 'capabilities:')"
                    )
            if m.endpoint not in declared_endpoints:
                found.append(
                    f"models.{name}.endpoint: endpoint {m.endpoint!r} is not declared under 'endpoints:' "
                    f"(declared: {', '.join(sorted(declared_endpoints))})"
                )
            for fb in m.fallbacks:
                if fb not in self.models:
                    found.append(f"models.{name}.fallbacks: {fb!r} is not a model in this catalog")
                elif fb == name:
                    found.append(f"models.{name}.fallbacks: a model cannot fall back to itself")
        found.extend(_fallback_cycles(self.models))
        for i, target in enumerate(self.policy.escalation.to):
            if target not in self.models:
                found.append(f"policy.escalation.to[{i}]: {target!r} is not a model in this catalog")
        for i, b in enumerate(self.budgets):
            if b.model is None and b.tag is None:
                found.append(f"budgets[{i}]: give 'model' or 'tag'")
            if b.model is not None and b.model not in self.models:
                found.append(f"budgets[{i}].model: {b.model!r} is not a model in this catalog")
            if b.max_cost_usd is None and b.max_tokens is None:
                found.append(f"budgets[{i}]: give 'max_cost_usd' or 'max_tokens'")
        for pname, p in self.presets.items():
            if pname == "auto":
                found.append("presets.auto: 'auto' is the default router and cannot be redefined")
            for m_name in p.models or []:
                if m_name not in self.models:
                    found.append(f"presets.{pname}.models: {m_name!r} is not a model in this catalog")
            for cap in p.prefer:
                if cap not in known:
                    found.append(f"presets.{pname}.prefer: unknown capability {cap!r}")
        return found


def _fallback_cycles(models: dict[str, ModelEntry]) -> list[str]:
    """Each fallback cycle once, written as the path that closes it (a -> b -> a)."""
    cycles: list[str] = []
    seen_cycles: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in models[node].fallbacks:
            if nxt not in models or nxt == node:
                continue
            if state.get(nxt) == 1:
                loop = path[path.index(nxt) :] + [nxt]
                key = frozenset(loop)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    cycles.append(f"models.{nxt}.fallbacks: cycle {' -> '.join(loop)}")
            elif state.get(nxt) is None:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for name in models:
        if name not in state:
            visit(name, [])
    return cycles


def _format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field")
        else:
            lines.append(f"{where}: {err['msg']}")
    return lines


def parse_catalog(data: Any, source: str = "<memory>") -> RouterCatalog:
    if not isinstance(data, dict):
        raise CatalogError(source, ["the file must hold a mapping with at least 'models:'"])
    try:
        catalog = RouterCatalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(source, _format_validation_error(exc)) from None
    problems = catalog.problems()
    if problems:
        raise CatalogError(source, problems)
    return catalog


def load_catalog(path: Path) -> RouterCatalog:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(str(path), [f"not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"]) from None
    return parse_catalog(data, str(path))


def catalog_from_local_models(models: Iterable[tuple[str, list[str], int]]) -> RouterCatalog:
    """A default catalog for when the user wrote none: every local chat alias, with its declared capabilities.

    ``models`` yields (alias, capabilities, context_length). Capabilities the router does not know are kept
    as custom ones rather than rejected: the lokal catalog is the source of truth here.
    """
    entries: dict[str, ModelEntry] = {}
    custom: set[str] = set()
    for alias, caps, ctx in models:
        caps = list(caps) or ["general"]
        custom.update(c for c in caps if c not in KNOWN_CAPABILITIES)
        # Generalists plan and summarize; preferring them slightly keeps specialists for their specialty.
        priority = 1 if "general" in caps else 2
        entries[alias] = ModelEntry(capabilities=caps, priority=priority, max_context=ctx)
    return RouterCatalog(models=entries, capabilities=sorted(custom))


class CatalogStore:
    """Holds the current catalog and re-reads the file when its mtime or size changes (no restart).

    A broken edit keeps the last good catalog in service and is reported in ``last_error``.
    """

    def __init__(
        self,
        path: Path | None,
        default: RouterCatalog | Callable[[], RouterCatalog] | None = None,
        *,
        default_ttl_s: float = 5.0,
    ) -> None:
        self.path = path
        # A callable default is rebuilt now and then: the local models it derives from can change.
        self._default_source = default
        self._default_ttl = default_ttl_s
        self._default_at = float("-inf")
        self._default_cached: RouterCatalog | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._catalog: RouterCatalog | None = None
        self.last_error: CatalogError | None = None
        self.reloads = 0
        self.get()  # fail now, not on the first request, when the file is broken and there is no default

    @property
    def _default(self) -> RouterCatalog | None:
        src = self._default_source
        if src is None or isinstance(src, RouterCatalog):
            return src
        now = time.monotonic()
        if self._default_cached is None or now - self._default_at > self._default_ttl:
            self._default_cached, self._default_at = src(), now
        return self._default_cached

    @property
    def using_default(self) -> bool:
        return self._stamp is None

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> RouterCatalog:
        stamp = self._file_stamp()
        with self._lock:
            if stamp is None:
                # No file (or it vanished): the default if there is one, else keep serving what we had.
                if self._default is not None:
                    self._catalog, self._stamp = self._default, None
                if self._catalog is None:
                    raise CatalogError(str(self.path), ["file not found and no default catalog given"])
                return self._catalog
            if stamp != self._stamp or self._catalog is None:
                assert self.path is not None
                try:
                    self._catalog = load_catalog(self.path)
                    self.last_error = None
                    self.reloads += 1
                    log.info("router catalog loaded from %s", self.path)
                except CatalogError as exc:
                    self.last_error = exc
                    log.error("%s (keeping the previous catalog)", exc.message)
                    if self._catalog is None and self._default is not None:
                        self._catalog = self._default
                self._stamp = stamp
            if self._catalog is None:
                assert self.last_error is not None
                raise self.last_error
            return self._catalog
