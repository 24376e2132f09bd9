"""Cost emulation: the same tokens priced as a cloud API would bill them, and as local device time (TCO)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lokal.bench.config import Price
from lokal.bench.metrics import RequestRecord


@dataclass(frozen=True, slots=True)
class LocalCost:
    """What an hour of the local device costs (hardware amortisation, hosting) and, optionally, its power."""

    device_cost_per_hour: float = 0.0
    watts: float | None = None  # mean draw while generating; None = no energy estimate
    kwh_price: float = 0.30

    def energy_kwh(self, device_seconds: float) -> float | None:
        return None if self.watts is None else self.watts * device_seconds / 3.6e6

    def cost(self, device_seconds: float) -> float:
        energy = self.energy_kwh(device_seconds) or 0.0
        return self.device_cost_per_hour * device_seconds / 3600 + energy * self.kwh_price


class PriceTable:
    """Model name -> cloud price; the entry "*" (if any) prices every other model."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.prices = dict(prices or {})

    def get(self, model: str) -> Price | None:
        return self.prices.get(model) or self.prices.get("*")

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """JSON/YAML `{model: {input_per_1m, output_per_1m}}`, optionally under "prices"."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if p.suffix in {".yaml", ".yml"} else json.loads(text)
        if isinstance(data, dict) and "prices" in data:
            data = data["prices"]
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping of model name to price")
        return cls({str(k): Price.model_validate(v) for k, v in data.items()})


@dataclass(frozen=True, slots=True)
class CostView:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    device_seconds: float  # sum of request latencies: device busy time when requests run one at a time
    cloud_usd: float | None
    local_usd: float
    energy_kwh: float | None

    def per_request(self, value: float | None) -> float | None:
        return None if value is None or not self.requests else value / self.requests

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cloud_usd_per_1k_requests"] = None if self.cloud_usd is None else self.per_request(self.cloud_usd * 1000)
        d["local_usd_per_1k_requests"] = self.per_request(self.local_usd * 1000)
        return d


def combined(views: Iterable[CostView], *, requests: int) -> CostView:
    """Stages of one pipeline (draft + refine) as the cost of `requests` user requests."""
    vs = list(views)
    clouds = [v.cloud_usd for v in vs if v.cloud_usd is not None]
    energies = [v.energy_kwh for v in vs if v.energy_kwh is not None]
    return CostView(
        requests=requests,
        prompt_tokens=sum(v.prompt_tokens for v in vs),
        completion_tokens=sum(v.completion_tokens for v in vs),
        device_seconds=sum(v.device_seconds for v in vs),
        cloud_usd=sum(clouds) if clouds else None,
        local_usd=sum(v.local_usd for v in vs),
        energy_kwh=sum(energies) if energies else None,
    )


def cost_of(
    records: Iterable[RequestRecord], price: Price | None, local: LocalCost, *, requests: int | None = None
) -> CostView:
    ok = [r for r in records if r.ok]
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    completion = sum(r.completion_tokens or 0 for r in ok)
    seconds = sum(r.e2e_s or 0.0 for r in ok)
    return CostView(
        requests=len(ok) if requests is None else requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        device_seconds=seconds,
        cloud_usd=price.cost(prompt, completion) if price else None,
        local_usd=local.cost(seconds),
        energy_kwh=local.energy_kwh(seconds),
    )
