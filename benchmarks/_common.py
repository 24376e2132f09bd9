"""Shared by the benchmark scripts: a synthetic real-shaped model, made once and cached under /tmp."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from lokal.gguf.synthetic import SHAPES, write_gguf

CACHE = Path(os.environ.get("LOKAL_BENCH_CACHE", "/tmp/lokal-bench"))


def synthetic_model(like: str = "qwen2.5-0.5b", quant: str = "q4_0") -> Path:
    path = CACHE / f"{like}-{quant}.gguf"
    if not path.exists():
        print(f"writing synthetic {like} {quant} to {path} (once) ...", flush=True)
        write_gguf(path, SHAPES[like], quant, like=like)
    return path


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
