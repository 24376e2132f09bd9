"""JSONL traces of routed calls (one event per step), and the cost simulation built from them."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lokal.router.catalog import RouterCatalog

TRACE_FIELDS = (
    "ts",
    "trace_id",
    "kind",
    "step",
    "router",
    "intent",
    "confidence",
    "method",
    "escalated",
    "reason",
    "model",
    "endpoint",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cache_hit",
    "fallback_used",
    "attempts",
    "error",
    "prompt",
)


@dataclass(slots=True)
class TraceEvent:
    trace_id: str
    kind: str  # "route" (one request), "plan", "step", "refine"
    step: int | None
    router: str
    intent: str
    confidence: float
    method: str
    model: str | None  # None when every candidate failed
    endpoint: str | None
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False
    fallback_used: bool = False
    escalated: bool = False
    reason: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    prompt: str = ""  # first characters only: enough to recognise the step, not a transcript
    ts: float = field(default_factory=time.time)

    def to_json(self) -> str:
        d = asdict(self)
        d["latency_ms"] = round(self.latency_ms, 2)
        d["confidence"] = round(self.confidence, 4)
        d["cost_usd"] = round(self.cost_usd, 8)
        return json.dumps({k: d[k] for k in TRACE_FIELDS}, ensure_ascii=False)


class TraceWriter:
    """Appends events to one JSONL file; a lock keeps lines whole when several threads record at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, event: TraceEvent) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)


def read_trace(path: Path) -> list[dict[str, Any]]:
    events = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
    return events


@dataclass(slots=True)
class TaskCost:
    trace_id: str
    events: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # as routed (cache hits cost nothing)
    latency_ms: float
    by_model: dict[str, float]
    what_if: dict[str, float]  # the same tokens, all sent to one model


def simulate_costs(events: Sequence[dict[str, Any]], catalog: RouterCatalog | None = None) -> list[TaskCost]:
    """Per task (trace id): tokens and notional cost as routed, and what the same tokens would cost on each
    catalog model. Without a catalog the recorded per-event cost is used and ``what_if`` stays empty."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        groups[str(e.get("trace_id", ""))].append(e)
    out = []
    for trace_id, evs in groups.items():
        by_model: dict[str, float] = defaultdict(float)
        pt = ct = 0
        total = 0.0
        billable: list[tuple[int, int]] = []
        for e in evs:
            p, c = int(e.get("prompt_tokens") or 0), int(e.get("completion_tokens") or 0)
            pt += p
            ct += c
            if e.get("cache_hit") or not e.get("model"):
                continue
            model = str(e["model"])
            if catalog is not None and model in catalog.models:
                cost = catalog.models[model].cost(p, c)
            else:
                cost = float(e.get("cost_usd") or 0.0)
            by_model[model] += cost
            total += cost
            billable.append((p, c))
        what_if: dict[str, float] = {}
        if catalog is not None:
            for name, entry in catalog.models.items():
                what_if[name] = sum(entry.cost(p, c) for p, c in billable)
        out.append(
            TaskCost(
                trace_id=trace_id,
                events=len(evs),
                prompt_tokens=pt,
                completion_tokens=ct,
                cost_usd=total,
                latency_ms=sum(float(e.get("latency_ms") or 0.0) for e in evs),
                by_model=dict(by_model),
                what_if=what_if,
            )
        )
    return out


def iter_trace_files(folder: Path) -> Iterable[Path]:
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
