"""Benchmark and compare models on lokal or any OpenAI-compatible endpoint.

from lokal.bench import BenchConfig, ModelEntry, LoadPattern, run_bench, write_report
result = run_bench(BenchConfig(models=[ModelEntry(name="qwen2.5-0.5b")], rounds=5,
                               pattern=LoadPattern("concurrency", concurrency=4)))
write_report(result, "r.html")
"""

from __future__ import annotations

from lokal.bench.compare import CompareConfig, CompareResult, HybridPolicy, arun_compare, run_compare
from lokal.bench.config import BenchConfig, LoadPattern, ModelEntry, Price, Sweep, load_models_file
from lokal.bench.costs import LocalCost, PriceTable
from lokal.bench.diff import diff_results
from lokal.bench.metrics import SLO, RequestRecord, Stats, Summary
from lokal.bench.prompts import BUILTIN, Prompt, load_prompts
from lokal.bench.report import write_report
from lokal.bench.result import BenchResult, ModelResult, StepResult
from lokal.bench.runner import ProgressEvent, arun_bench, run_bench

__all__ = [
    "BUILTIN",
    "SLO",
    "BenchConfig",
    "BenchResult",
    "CompareConfig",
    "CompareResult",
    "HybridPolicy",
    "LoadPattern",
    "LocalCost",
    "ModelEntry",
    "ModelResult",
    "Price",
    "PriceTable",
    "ProgressEvent",
    "Prompt",
    "RequestRecord",
    "Stats",
    "StepResult",
    "Summary",
    "Sweep",
    "arun_bench",
    "arun_compare",
    "diff_results",
    "load_models_file",
    "load_prompts",
    "run_bench",
    "run_compare",
    "write_report",
]
