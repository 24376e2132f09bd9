"""Reading `/lokal/ps` for display, shared by `lokal model ps` and `foundry service ps`.

The payload is read, not trusted: it may come from an older or newer server, so a missing key, a null, a
string or a non-finite number (an older server answered a TTL of inf with `Infinity`) shows as "-" instead of
ending the command in a traceback. Imports nothing heavy: `foundry service ps` should start fast.
"""

from __future__ import annotations

import math
from typing import Any


def models(data: Any) -> list[dict[str, Any]]:
    """The model rows of a ps payload; anything that is not a row is left out."""
    rows = data.get("models") if isinstance(data, dict) else None
    return [m for m in rows if isinstance(m, dict)] if isinstance(rows, list) else []


def number(value: Any) -> float | None:
    """A finite number, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def fmt(value: Any, spec: str = ".0f", suffix: str = "") -> str:
    n = number(value)
    return "-" if n is None else f"{n:{spec}}{suffix}"


def text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


REPLICA_COLUMNS = ("model", "replica", "in flight", "healthy", "latency ewma ms", "failures", "requests")


def replica_cells(model: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row of cells per upstream replica of a model row (a remote model's pool); none for other models."""
    rows = model.get("replicas")
    if not isinstance(rows, list):
        return []
    alias = text(model.get("alias"))
    out: list[tuple[str, ...]] = []
    for r in rows:
        if not isinstance(r, dict):
            continue
        healthy = r.get("healthy")
        ejected = number(r.get("ejected_for_s"))
        state = "-" if not isinstance(healthy, bool) else "yes" if healthy else "no"
        if ejected:
            state += f" (ejected {ejected:.0f}s)"
        out.append(
            (
                alias,
                text(r.get("url")),
                fmt(r.get("in_flight")),
                state,
                fmt(r.get("latency_ewma_ms"), ".1f"),
                fmt(r.get("failures")),
                fmt(r.get("requests")),
            )
        )
    return out
