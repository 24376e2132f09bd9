"""What a benchmark run is asked to do: models, prompts, load pattern and bounds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from lokal.bench.metrics import SLO
from lokal.bench.prompts import Prompt, load_prompts
from lokal.config import env_value, get_settings

PatternKind = Literal["sequential", "concurrency", "rate", "poisson"]


class Price(BaseModel):
    """Cloud list price in dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    input_per_1m: float = Field(0.0, validation_alias=AliasChoices("input_per_1m", "input", "prompt"))
    output_per_1m: float = Field(0.0, validation_alias=AliasChoices("output_per_1m", "output", "completion"))

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


class ModelEntry(BaseModel):
    """One model to measure. `name` is what goes in the request's "model" field."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(validation_alias=AliasChoices("name", "id", "model", "alias"))
    label: str | None = None
    endpoint: str | None = Field(default=None, validation_alias=AliasChoices("endpoint", "base_url"))
    api_key_env: str | None = None
    tags: list[str] = Field(default_factory=list, validation_alias=AliasChoices("tags", "capabilities"))
    size_b: float | None = Field(default=None, validation_alias=AliasChoices("size_b", "parameters_b", "size"))
    price: Price | None = None

    @property
    def display(self) -> str:
        return self.label or self.name

    def api_key(self, default: str | None) -> str | None:
        if self.api_key_env:
            return env_value(self.api_key_env, default)
        return default


def load_models_file(path: str | Path) -> list[ModelEntry]:
    """A JSON/YAML list of names or objects (or `{"models": [...]}`), with optional tags, size and price."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    data = yaml.safe_load(text) if p.suffix in {".yaml", ".yml"} else json.loads(text)
    if isinstance(data, dict) and "models" in data:
        data = data["models"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{p}: expected a non-empty list of models")
    return [ModelEntry(name=x) if isinstance(x, str) else ModelEntry.model_validate(x) for x in data]


def parse_models(values: list[str]) -> list[ModelEntry]:
    """CLI values: names (comma-separated allowed) or paths to a models file."""
    out: list[ModelEntry] = []
    for value in values:
        if value.endswith((".json", ".yaml", ".yml")) and Path(value).is_file():
            out.extend(load_models_file(value))
        else:
            out.extend(ModelEntry(name=v.strip()) for v in value.split(",") if v.strip())
    return out


@dataclass(frozen=True, slots=True)
class LoadPattern:
    kind: PatternKind = "sequential"
    concurrency: int = 1  # "concurrency": workers kept busy
    rate: float | None = None  # "rate" / "poisson": requests per second
    max_concurrency: int | None = None  # optional cap on in-flight requests for the rate patterns

    def __post_init__(self) -> None:
        if self.kind in ("rate", "poisson") and (self.rate is None or self.rate <= 0):
            raise ValueError(f"load pattern {self.kind!r} needs a positive rate")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")

    @property
    def label(self) -> str:
        if self.kind == "sequential":
            return "sequential"
        if self.kind == "concurrency":
            return f"concurrency={self.concurrency}"
        return f"{self.kind}={self.rate:g}/s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "max_concurrency": self.max_concurrency,
        }


@dataclass(frozen=True, slots=True)
class Sweep:
    """Load levels tried in order; the sweep stops after the first level whose SLO attainment fails."""

    levels: tuple[LoadPattern, ...]
    stop_on_fail: bool = True

    @classmethod
    def parse(cls, spec: str, *, max_concurrency: int | None = None) -> Sweep:
        """ "concurrency:1,2,4,8", "rate:1,2,4" or "poisson:1,2,4"."""
        kind, _, values = spec.partition(":")
        if kind not in ("concurrency", "rate", "poisson") or not values:
            raise ValueError(f"sweep {spec!r}: expected concurrency:N,N,... or rate:R,R,... or poisson:R,R,...")
        nums = [float(v) for v in values.split(",") if v.strip()]
        if kind == "concurrency":
            levels = tuple(LoadPattern("concurrency", concurrency=int(n)) for n in nums)
        else:
            levels = tuple(LoadPattern(kind, rate=n, max_concurrency=max_concurrency) for n in nums)  # type: ignore[arg-type]
        return cls(levels=levels)


def default_endpoint() -> str:
    """The lokal server's /v1: LOKAL_BASE_URL when set (the CLI's --base-url), else LOKAL_HOST:LOKAL_PORT."""
    base = (env_value("LOKAL_BASE_URL") or "").rstrip("/") or get_settings().base_url
    return base if base.endswith("/v1") else f"{base}/v1"


def default_api_key(endpoint: str | None) -> str | None:
    """The local server's own key (LOKAL_API_KEY) when talking to it; never a key meant for someone else."""
    if endpoint is not None and endpoint.rstrip("/") != default_endpoint():
        return None
    return get_settings().api_key


@dataclass(slots=True)
class BenchConfig:
    models: list[ModelEntry]
    endpoint: str = field(default_factory=default_endpoint)
    api_key: str | None = None
    prompts: list[Prompt] = field(default_factory=lambda: load_prompts(None))
    rounds: int = 3  # passes over the prompt set that count
    warmup_rounds: int = 1  # passes that do not count (loads the model, fills caches)
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int | None = 1234  # with temperature 0: deterministic mode
    stream: bool = True
    ignore_eos: bool = False  # ask servers that support it (lokal, vLLM) for a fixed output length
    extra_body: dict[str, Any] = field(default_factory=dict)
    pattern: LoadPattern = field(default_factory=LoadPattern)
    sweep: Sweep | None = None
    slo: SLO | None = None
    max_duration_s: float | None = None  # per load level: stop sending new requests after this
    request_timeout_s: float = 300.0
    tokenizer: str | None = None  # tokenizer.json path or HF name, for counting when usage is missing
    server_stats: bool = True  # read GET {root}/lokal/ps when the endpoint offers it
    keep_outputs: bool = False  # keep every output text in the records (compare needs them)
    logprobs: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no models to benchmark")
        if not self.prompts:
            raise ValueError("empty prompt set")
        if self.rounds < 1 or self.warmup_rounds < 0:
            raise ValueError("rounds must be >= 1 and warmup_rounds >= 0")

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0 and self.seed is not None

    @property
    def levels(self) -> tuple[LoadPattern, ...]:
        return self.sweep.levels if self.sweep else (self.pattern,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [m.model_dump(exclude_none=True) for m in self.models],
            "endpoint": self.endpoint,
            "prompts": [p.id for p in self.prompts],
            "rounds": self.rounds,
            "warmup_rounds": self.warmup_rounds,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "deterministic": self.deterministic,
            "stream": self.stream,
            "ignore_eos": self.ignore_eos,
            "extra_body": self.extra_body,
            "pattern": self.pattern.to_dict(),
            "sweep": [lv.to_dict() for lv in self.sweep.levels] if self.sweep else None,
            "slo": None
            if self.slo is None
            else {
                "ttft_s": self.slo.ttft_s,
                "itl_s": self.slo.itl_s,
                "e2e_s": self.slo.e2e_s,
                "attainment": self.slo.attainment,
            },
            "max_duration_s": self.max_duration_s,
            "request_timeout_s": self.request_timeout_s,
            "tokenizer": self.tokenizer,
        }
