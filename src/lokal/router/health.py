"""What the router remembers between requests about each model: recent failures and money spent."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lokal.router.catalog import RouterCatalog


class Cooldowns:
    """A model that just failed is tried last for a while, so one dead upstream does not slow every call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def fail(self, model: str, seconds: float) -> None:
        with self._lock:
            self._until[model] = self._clock() + seconds

    def ok(self, model: str) -> None:
        with self._lock:
            self._until.pop(model, None)

    def cooling(self) -> dict[str, float]:
        """Model -> seconds left."""
        now = self._clock()
        with self._lock:
            for m in [m for m, t in self._until.items() if t <= now]:
                del self._until[m]
            return {m: t - now for m, t in self._until.items()}


@dataclass(frozen=True, slots=True)
class _Spend:
    at: float
    model: str
    tokens: int
    cost: float


class BudgetLedger:
    """Spending per model, checked against the catalog's budgets (per model or per tag, optional period)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, horizon_s: float = 31 * 86400) -> None:
        self._spend: deque[_Spend] = deque()
        self._clock = clock
        self._horizon = horizon_s
        self._lock = threading.Lock()

    def add(self, model: str, tokens: int, cost: float) -> None:
        now = self._clock()
        with self._lock:
            self._spend.append(_Spend(now, model, tokens, cost))
            while self._spend and self._spend[0].at < now - self._horizon:
                self._spend.popleft()

    def over_budget(self, catalog: RouterCatalog) -> dict[str, str]:
        """Model -> which budget it exhausted."""
        if not catalog.budgets:
            return {}
        now = self._clock()
        with self._lock:
            spend = list(self._spend)
        out: dict[str, str] = {}
        for i, b in enumerate(catalog.budgets):
            members = {n for n, e in catalog.models.items() if b.applies_to(n, e)}
            since = now - b.period_s if b.period_s is not None else float("-inf")
            rows = [s for s in spend if s.model in members and s.at >= since]
            tokens = sum(s.tokens for s in rows)
            cost = sum(s.cost for s in rows)
            label = f"budgets[{i}] ({'model ' + b.model if b.model else 'tag ' + str(b.tag)})"
            if (b.max_tokens is not None and tokens >= b.max_tokens) or (
                b.max_cost_usd is not None and cost >= b.max_cost_usd
            ):
                for m in members:
                    out.setdefault(m, label)
        return out
