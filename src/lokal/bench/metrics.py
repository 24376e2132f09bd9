"""Per-request timing records and the statistics computed from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

# Where a token count came from. Anything but "usage" is an estimate and is labelled as such in reports.
TokenSource = Literal["usage", "tokenizer", "chunks", "chars/4"]

PERCENTILES = (50, 90, 95, 99)


@dataclass(slots=True)
class RequestRecord:
    """One request as the client saw it. Times are seconds; `start_s` is relative to the run's start."""

    model: str
    prompt_id: str
    round: int
    start_s: float = 0.0
    ok: bool = False
    stream: bool = True
    status_code: int | None = None
    error: str | None = None
    error_kind: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)  # gaps between content chunks after the first
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_token_source: TokenSource | None = None
    completion_token_source: TokenSource | None = None
    content_chunks: int = 0
    output_chars: int = 0
    finish_reason: str | None = None
    # Latency decomposition: build+encode the request; write it and wait for response headers;
    # headers -> first content token; first token -> end of stream.
    phase_prepare_s: float | None = None
    phase_send_s: float | None = None
    phase_first_token_s: float | None = None
    phase_completion_s: float | None = None
    mean_logprob: float | None = None
    output: str | None = None  # kept only where the caller asks (samples, compare), not for every request

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; the decode speed a user feels once text is flowing."""
        if self.ttft_s is None or self.e2e_s is None or not self.completion_tokens:
            return None
        if self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)

    @property
    def output_tps(self) -> float | None:
        if not self.ok or self.e2e_s is None or self.e2e_s <= 0 or self.completion_tokens is None:
            return None
        return self.completion_tokens / self.e2e_s

    def to_dict(self, *, with_output: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_output:
            d.pop("output", None)
        d["tpot_s"] = self.tpot_s
        d["output_tps"] = self.output_tps
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    mean: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    std: float

    @classmethod
    def of(cls, values: Iterable[float | int | None]) -> Stats | None:
        arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
        if arr.size == 0:
            return None
        p50, p90, p95, p99 = (float(x) for x in np.percentile(arr, PERCENTILES))
        return cls(
            n=int(arr.size),
            mean=float(arr.mean()),
            min=float(arr.min()),
            max=float(arr.max()),
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            std=float(arr.std()),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SLO:
    """A service-level objective: a request is "good" when every bound it sets holds (vLLM's goodput)."""

    ttft_s: float | None = None
    itl_s: float | None = None  # checked against the request's TPOT (mean inter-token time)
    e2e_s: float | None = None
    attainment: float = 0.9  # fraction of good requests for the SLO to hold at a load level

    def is_set(self) -> bool:
        return any(x is not None for x in (self.ttft_s, self.itl_s, self.e2e_s))

    def good(self, r: RequestRecord) -> bool:
        if not r.ok:
            return False
        if self.ttft_s is not None and (r.ttft_s is None or r.ttft_s > self.ttft_s):
            return False
        tpot = r.tpot_s
        if self.itl_s is not None and tpot is not None and tpot > self.itl_s:
            return False
        return not (self.e2e_s is not None and (r.e2e_s is None or r.e2e_s > self.e2e_s))


METRIC_NAMES = (
    "ttft_s",
    "itl_s",
    "tpot_s",
    "e2e_s",
    "output_tps",
    "prompt_tokens",
    "completion_tokens",
    "phase_prepare_s",
    "phase_send_s",
    "phase_first_token_s",
    "phase_completion_s",
)


@dataclass(slots=True)
class Summary:
    requests: int
    success: int
    errors: int
    error_kinds: dict[str, int]
    duration_s: float
    request_throughput: float  # successful requests per second of wall time
    output_throughput: float  # completion tokens per second, all requests together
    total_token_throughput: float
    mean_concurrency: float  # Little's law: sum of latencies / wall time
    max_in_flight: int
    token_source: str  # "usage" when every count came from the server, else what estimated them
    metrics: dict[str, Stats | None]
    goodput: float | None = None  # good requests per second under the SLO
    slo_attainment: float | None = None

    def stat(self, name: str) -> Stats | None:
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "metrics"}
        d["metrics"] = {k: (v.to_dict() if v else None) for k, v in self.metrics.items()}
        return d


def _token_source(records: Sequence[RequestRecord]) -> str:
    sources = Counter(s for r in records if r.ok for s in (r.prompt_token_source, r.completion_token_source) if s)
    if not sources:
        return "none"
    if set(sources) == {"usage"}:
        return "usage"
    return "estimated:" + ",".join(sorted(s for s in sources if s != "usage"))


def summarize(
    records: Sequence[RequestRecord], *, duration_s: float, max_in_flight: int = 0, slo: SLO | None = None
) -> Summary:
    ok = [r for r in records if r.ok]
    errors = Counter(r.error_kind or "error" for r in records if not r.ok)
    duration = max(duration_s, 1e-9)
    completion = sum(r.completion_tokens or 0 for r in ok)
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    metrics: dict[str, Stats | None] = {
        "ttft_s": Stats.of(r.ttft_s for r in ok),
        "itl_s": Stats.of(x for r in ok for x in r.itl_s),
        "tpot_s": Stats.of(r.tpot_s for r in ok),
        "e2e_s": Stats.of(r.e2e_s for r in ok),
        "output_tps": Stats.of(r.output_tps for r in ok),
        "prompt_tokens": Stats.of(r.prompt_tokens for r in ok),
        "completion_tokens": Stats.of(r.completion_tokens for r in ok),
        "phase_prepare_s": Stats.of(r.phase_prepare_s for r in ok),
        "phase_send_s": Stats.of(r.phase_send_s for r in ok),
        "phase_first_token_s": Stats.of(r.phase_first_token_s for r in ok),
        "phase_completion_s": Stats.of(r.phase_completion_s for r in ok),
    }
    goodput = attainment = None
    if slo is not None and slo.is_set() and records:
        good = sum(1 for r in records if slo.good(r))
        goodput = good / duration
        attainment = good / len(records)
    return Summary(
        requests=len(records),
        success=len(ok),
        errors=len(records) - len(ok),
        error_kinds=dict(errors),
        duration_s=duration_s,
        request_throughput=len(ok) / duration,
        output_throughput=completion / duration,
        total_token_throughput=(completion + prompt) / duration,
        mean_concurrency=sum(r.e2e_s or 0.0 for r in records) / duration,
        max_in_flight=max_in_flight,
        token_source=_token_source(records),
        metrics=metrics,
        goodput=goodput,
        slo_attainment=attainment,
    )


def stats_from_dict(d: dict[str, Any] | None) -> Stats | None:
    return Stats(**d) if d else None


def summary_from_dict(d: dict[str, Any]) -> Summary:
    fields = {k: v for k, v in d.items() if k in Summary.__dataclass_fields__ and k != "metrics"}
    return Summary(**fields, metrics={k: stats_from_dict(v) for k, v in d.get("metrics", {}).items()})
