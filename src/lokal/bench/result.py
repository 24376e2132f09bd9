"""What a run produced. Its JSON form (`BenchResult.to_dict`) is the authoritative report; others derive."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lokal.bench.config import LoadPattern, ModelEntry
from lokal.bench.metrics import RequestRecord, Summary, summary_from_dict
from lokal.bench.server_info import ServerFigures

SCHEMA = "lokal.bench/1"
Status = Literal["ok", "partial", "failed"]


@dataclass(slots=True)
class StepResult:
    """One load level for one model."""

    pattern: LoadPattern
    summary: Summary
    records: list[RequestRecord]
    truncated: bool = False  # the duration bound stopped it before every request was sent
    slo_ok: bool | None = None
    schedule_s: list[float] | None = None  # intended send offsets for the rate patterns
    # perf_counter at the level's start: record i was sent at t0_perf_s + start_s. Lets a same-host server's
    # timestamps (time.perf_counter is CLOCK_MONOTONIC on Linux) be lined up with the client's.
    t0_perf_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern.to_dict(),
            "label": self.pattern.label,
            "truncated": self.truncated,
            "slo_ok": self.slo_ok,
            "summary": self.summary.to_dict(),
            "schedule_s": self.schedule_s,
            "t0_perf_s": self.t0_perf_s,
            "requests": [r.to_dict() for r in self.records],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepResult:
        return cls(
            pattern=LoadPattern(**d["pattern"]),
            summary=summary_from_dict(d["summary"]),
            records=[RequestRecord.from_dict(r) for r in d.get("requests", [])],
            truncated=bool(d.get("truncated")),
            slo_ok=d.get("slo_ok"),
            schedule_s=d.get("schedule_s"),
            t0_perf_s=d.get("t0_perf_s"),
        )


@dataclass(slots=True)
class ModelResult:
    entry: ModelEntry
    endpoint: str
    status: Status = "ok"
    error: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    warmup: list[RequestRecord] = field(default_factory=list)
    server: ServerFigures | None = None
    samples: dict[str, str] = field(default_factory=dict)  # prompt id -> one output
    best_step: int | None = None  # sweep: highest load level whose SLO held
    # Random weights with a real model's shape: speed figures are real for that shape, the text is noise. None
    # means the endpoint did not say (not lokal), which reports leave unlabelled.
    synthetic: bool | None = None

    @property
    def name(self) -> str:
        return self.entry.display

    @property
    def label(self) -> str:
        """The name as every report prints it: a synthetic model is never shown without saying so."""
        return f"{self.name} [SYNTHETIC]" if self.synthetic else self.name

    @property
    def cold_start_s(self) -> float | None:
        """Latency of the very first request: includes a model load on servers that load on demand."""
        first = self.warmup[0] if self.warmup else None
        return first.e2e_s if first is not None and first.ok else None

    @property
    def main_step(self) -> StepResult | None:
        if not self.steps:
            return None
        return self.steps[self.best_step] if self.best_step is not None else self.steps[0]

    @property
    def records(self) -> list[RequestRecord]:
        return [r for s in self.steps for r in s.records]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.entry.name,
            "label": self.entry.display,
            "synthetic": self.synthetic,
            "entry": self.entry.model_dump(exclude_none=True),
            "endpoint": self.endpoint,
            "status": self.status,
            "error": self.error,
            "cold_start_s": self.cold_start_s,
            "server": self.server.to_dict() if self.server else None,
            "best_step": self.best_step,
            "samples": self.samples,
            "warmup": [r.to_dict() for r in self.warmup],
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelResult:
        server = d.get("server")
        return cls(
            entry=ModelEntry.model_validate(d.get("entry") or {"name": d["model"]}),
            endpoint=d.get("endpoint", ""),
            status=d.get("status", "ok"),
            error=d.get("error"),
            steps=[StepResult.from_dict(s) for s in d.get("steps", [])],
            warmup=[RequestRecord.from_dict(r) for r in d.get("warmup", [])],
            server=ServerFigures(**server) if server else None,
            samples=dict(d.get("samples") or {}),
            best_step=d.get("best_step"),
            synthetic=d.get("synthetic"),
        )


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        lokal_version = version("lokal")
    except PackageNotFoundError:
        lokal_version = "unknown"
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "lokal": lokal_version,
    }


@dataclass(slots=True)
class BenchResult:
    config: dict[str, Any]
    models: list[ModelResult]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    environment: dict[str, Any] = field(default_factory=environment)

    @property
    def all_failed(self) -> bool:
        return all(m.status == "failed" for m in self.models)

    @property
    def synthetic_models(self) -> list[ModelResult]:
        return [m for m in self.models if m.synthetic]

    @property
    def any_failed(self) -> bool:
        return any(m.status != "ok" for m in self.models)

    def model(self, name: str) -> ModelResult:
        for m in self.models:
            if name in (m.entry.name, m.entry.display):
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": self.created,
            "environment": self.environment,
            "config": self.config,
            "models": [m.to_dict() for m in self.models],
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a lokal bench result (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        return cls(
            config=d.get("config", {}),
            models=[ModelResult.from_dict(m) for m in d["models"]],
            created=d.get("created", ""),
            environment=d.get("environment", {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> BenchResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
