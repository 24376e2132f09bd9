"""GET /metrics: Prometheus text from the app's registry, with the per-model gauges read at scrape time."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lokal.server.deps import ServicesDep
from lokal.server.routes.admin import replica_rows

router = APIRouter()


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    m = services.metrics
    loaded = services.manager.loaded()
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
