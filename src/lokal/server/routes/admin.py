"""Operational endpoints: health, Prometheus metrics, and lokal's own model control (used by the CLI)."""

from __future__ import annotations

import math
import os
from typing import Any

import psutil
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lokal.errors import InvalidRequest
from lokal.server.state import AppState

router = APIRouter()
MAX_TTL_SECONDS = 365 * 24 * 3600.0


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lokal
    return state


@router.get("/health")
async def health(request: Request) -> Response:
    state = _state(request)
    if not state.ready:
        return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ok", "loaded_models": len(state.manager.loaded())})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = _state(request)
    m = state.metrics
    loaded = state.manager.loaded()
    m.loaded_models.set(len(loaded))
    for lm in loaded:
        m.model_memory.labels(lm.spec.alias).set(lm.memory_bytes)
        m.queue_depth.labels(lm.spec.alias).set(lm.worker.depth)
        stats = lm.worker.stats()
        for gauge, key in (
            (m.slots, "slots"),
            (m.slots_busy, "slots_busy"),
            (m.waiting, "waiting"),
            (m.batch_size, "batch_size"),
            (m.decode_steps, "decode_steps"),
            (m.prefix_reused, "prefix_reused_tokens"),
        ):
            if key in stats:
                gauge.labels(lm.spec.alias).set(stats[key])
    m.upstreams.rows = [(lm.spec.alias, row) for lm in loaded for row in replica_rows(lm.engine)]
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


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


def ps_payload(state: AppState) -> dict[str, Any]:
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
            for lm in state.manager.loaded()
        ],
    }


@router.get("/lokal/ps")
async def ps(request: Request) -> dict[str, Any]:
    return ps_payload(_state(request))


def check_ttl(ttl: float | None) -> float | None:
    """Idle seconds before unload: finite (inf and nan would break every reader of /lokal/ps), 0 to a year."""
    if ttl is not None and not (math.isfinite(ttl) and 0 <= ttl <= MAX_TTL_SECONDS):
        raise InvalidRequest(
            f"ttl must be a number of seconds from 0 to {MAX_TTL_SECONDS:.0f} (a year), not {ttl}", param="ttl"
        )
    return ttl


@router.post("/lokal/models/{name:path}/load")
async def load(request: Request, name: str, ttl: float | None = None) -> dict[str, Any]:
    lm = await _state(request).manager.get(name, ttl=check_ttl(ttl))
    return {"alias": lm.spec.alias, "id": lm.id, "load_seconds": lm.engine.info.load_seconds}


@router.post("/lokal/models/{name:path}/unload")
async def unload(request: Request, name: str, force: bool = False) -> dict[str, Any]:
    return {"unloaded": await _state(request).manager.unload(name, force=force)}
