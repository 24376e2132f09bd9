"""Prometheus metrics, on a registry per app so several servers (tests) can live in one process."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TPS_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 200, 500, 1000)


class UpstreamCollector(Collector):
    """Each replica of each loaded remote model, from the pools' own figures (set per scrape, so a replica or a
    model that is gone leaves no stale series behind)."""

    def __init__(self) -> None:
        self.rows: Sequence[tuple[str, dict[str, Any]]] = ()  # (model alias, a pool's stats() row)

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "replica"]
        in_flight = GaugeMetricFamily("lokal_upstream_in_flight", "Requests outstanding at a replica", labels=labels)
        healthy = GaugeMetricFamily(
            "lokal_upstream_healthy", "1 while a replica takes requests (health check up, not ejected)", labels=labels
        )
        latency = GaugeMetricFamily(
            "lokal_upstream_latency_ewma_seconds", "Time to first chunk at a replica, EWMA", labels=labels
        )
        failures = CounterMetricFamily("lokal_upstream_failures", "Failed requests at a replica", labels=labels)
        requests = CounterMetricFamily("lokal_upstream_requests", "Requests sent to a replica", labels=labels)
        for model, row in self.rows:
            key = [model, str(row.get("url"))]
            in_flight.add_metric(key, _num(row.get("in_flight")))
            healthy.add_metric(key, 1.0 if row.get("healthy") else 0.0)
            ms = row.get("latency_ewma_ms")
            if isinstance(ms, int | float):
                latency.add_metric(key, ms / 1000)
            failures.add_metric(key, _num(row.get("failures")))
            requests.add_metric(key, _num(row.get("requests")))
        yield from (in_flight, healthy, latency, failures, requests)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lokal_requests", "HTTP API requests", ["endpoint", "method", "status"], registry=r)
        self.tokens = Counter("lokal_tokens", "Tokens processed", ["model", "direction"], registry=r)
        self.ttft = Histogram(
            "lokal_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tps = Histogram(
            "lokal_output_tokens_per_second",
            "Decode speed per request",
            ["model"],
            buckets=_TPS_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("lokal_queue_depth", "Requests queued or running per model", ["model"], registry=r)
        self.loaded_models = Gauge("lokal_loaded_models", "Models loaded in memory", registry=r)
        self.model_memory = Gauge(
            "lokal_model_memory_bytes", "Estimated memory per loaded model", ["model"], registry=r
        )
        # Continuous batching (runtime/batch_worker.py); a one-at-a-time model reports one slot.
        self.slots = Gauge("lokal_slots", "Requests a loaded model can decode together", ["model"], registry=r)
        self.slots_busy = Gauge("lokal_slots_busy", "Slots holding a request", ["model"], registry=r)
        self.waiting = Gauge("lokal_waiting_requests", "Requests queued for a free slot", ["model"], registry=r)
        self.batch_size = Gauge(
            "lokal_batch_size", "Sequences per decode step, mean of the last 64 steps", ["model"], registry=r
        )
        self.decode_steps = Gauge(
            "lokal_decode_steps", "Batched decode steps since the model loaded", ["model"], registry=r
        )
        self.prefix_reused = Gauge(
            "lokal_prefix_reused_tokens", "Prompt tokens served from a slot's cache since load", ["model"], registry=r
        )
        self.upstreams = UpstreamCollector()
        r.register(self.upstreams)
