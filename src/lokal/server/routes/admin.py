"""Operational endpoints: health and lokal's own model control (used by the CLI)."""

from __future__ import annotations

import math
import os
from typing import Any

import psutil
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from lokal.runtime.manager import check_ttl
from lokal.runtime.services import Services
from lokal.server.deps import ServicesDep

router = APIRouter()


@router.get("/health")
async def health(services: ServicesDep) -> Response:
    if not services.ready:
        return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ok", "loaded_models": len(services.manager.loaded())})


def _seconds(value: float) -> float | None:
    # JSON has no infinity: a TTL set to inf elsewhere (the Foundry route) must not make /lokal/ps a 500.
    return round(value, 1) if math.isfinite(value) else None


def replica_rows(engine: object) -> list[dict[str, Any]]:
    """Per-replica figures of an engine in front of upstreams (in flight, healthy, latency EWMA, failures);
    none for an engine that serves the model itself."""
    replicas = getattr(engine, "replicas", None)
    if not callable(replicas):
        return []
    rows = replicas()
    return [dict(r) for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def ps_payload(services: Services) -> dict[str, Any]:
    return {
        "server_rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
        "models": [
            {
                "alias": lm.spec.alias,
                "id": lm.id,
                "engine": lm.variant.engine,
                "device": lm.variant.device,
                "synthetic": lm.spec.synthetic,
                "memory_bytes": lm.memory_bytes,
                "load_seconds": round(lm.engine.info.load_seconds, 4),
                "ttl_left": _seconds(lm.ttl_left()),
                "queue_depth": lm.worker.depth,
                "active": lm.active,
                "context_length": lm.engine.info.context_length,
                **{k: v for k, v in lm.engine.info.extra.items() if isinstance(v, int | float | str | bool)},
                **lm.worker.stats(),  # slots, slots_busy, waiting; batching adds batch_size, decode_steps, ...
                **({"replicas": rows} if (rows := replica_rows(lm.engine)) else {}),
            }
            for lm in services.manager.loaded()
        ],
    }


@router.get("/lokal/ps")
async def ps(services: ServicesDep) -> dict[str, Any]:
    return ps_payload(services)


@router.post("/lokal/models/{name:path}/load")
async def load(services: ServicesDep, name: str, ttl: float | None = None) -> dict[str, Any]:
    lm = await services.manager.get(name, ttl=check_ttl(ttl))
    return {"alias": lm.spec.alias, "id": lm.id, "load_seconds": lm.engine.info.load_seconds}


@router.post("/lokal/models/{name:path}/unload")
async def unload(services: ServicesDep, name: str, force: bool = False) -> dict[str, Any]:
    return {"unloaded": await services.manager.unload(name, force=force)}
