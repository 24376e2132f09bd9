"""Server-side facts when the target is lokal: figures from GET {root}/lokal/ps, and whether a model is
synthetic (random weights) from its /v1/models card. Other endpoints give `None`: unknown, not "real"."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

import httpx

from lokal.bench.client import BenchClient, api_root


@dataclass(frozen=True, slots=True)
class ServerFigures:
    server_rss_bytes: int | None
    memory_bytes: int | None  # the model's own footprint as the server accounts it
    load_seconds: float | None
    model_id: str | None
    synthetic: bool | None = None  # the loaded engine's own flag (the GGUF's lokal.synthetic key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(models: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for m in models:
        if name in (m.get("alias"), m.get("id")):
            return m
    for m in models:  # "qwen2.5-0.5b" asked, "qwen2.5-0.5b-instruct-...:1" loaded
        if str(m.get("id", "")).startswith(name):
            return m
    return None


async def fetch_server_figures(client: BenchClient, endpoint: str, model: str) -> ServerFigures | None:
    try:
        data = await client.get_json(f"{api_root(endpoint)}/lokal/ps")
    except (httpx.HTTPError, ValueError):
        return None  # not lokal, or an older lokal: report without server figures
    if not isinstance(data, dict):
        return None
    entry = _pick(list(data.get("models") or []), model)
    return ServerFigures(
        server_rss_bytes=data.get("server_rss_bytes"),
        memory_bytes=entry.get("memory_bytes") if entry else None,
        load_seconds=entry.get("load_seconds") if entry else None,
        model_id=entry.get("id") if entry else None,
        synthetic=_flag(entry.get("synthetic")) if entry else None,
    )


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


async def fetch_synthetic(client: BenchClient, endpoint: str, model: str) -> bool | None:
    """True when the endpoint's own model card says random weights; None when it does not say (not lokal)."""
    try:
        card = await client.get_json(f"{endpoint.rstrip('/')}/models/{quote(model, safe='')}")
    except (httpx.HTTPError, ValueError):
        return None
    facts = card.get("lokal") if isinstance(card, dict) else None
    return _flag(facts.get("synthetic")) if isinstance(facts, dict) else None


def either(*flags: bool | None) -> bool | None:
    """Any source saying synthetic wins; False only when one said so and none said True."""
    if any(f is True for f in flags):
        return True
    return False if any(f is False for f in flags) else None
