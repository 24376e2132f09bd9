"""`bench diff`: unlike configs are refused, regressions are judged against the runs' own noise, and every
output format marks them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from lokal.bench.config import BenchConfig, LoadPattern, ModelEntry
from lokal.bench.diff import diff_results, unlike_configs
from lokal.bench.metrics import RequestRecord, summarize
from lokal.bench.result import BenchResult, ModelResult, StepResult
from lokal.cli import bench as bench_cli
from tests.bench.helpers import prompts

runner = CliRunner()


def _run(ttfts: list[float], **cfg: object) -> BenchResult:
    """A run whose per-request TTFTs are given (e2e = ttft + 50 ms, 10 tokens each)."""
    records = [
        RequestRecord(
            model="m",
            prompt_id=f"p{i}",
            round=0,
            ok=True,
            ttft_s=t,
            e2e_s=t + 0.05,
            completion_tokens=10,
            prompt_tokens=5,
            itl_s=[0.005] * 9,
            prompt_token_source="usage",
            completion_token_source="usage",
        )
        for i, t in enumerate(ttfts)
    ]
    duration = sum(r.e2e_s or 0 for r in records)
    step = StepResult(LoadPattern(), summarize(records, duration_s=duration), records)
    config = BenchConfig(models=[ModelEntry(name="m")], prompts=prompts(2), **cfg).to_dict()  # type: ignore[arg-type]
    return BenchResult(config=config, models=[ModelResult(entry=ModelEntry(name="m"), endpoint="x", steps=[step])])


def _noisy(seed: int, n: int, centre: float) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.abs(rng.normal(centre, centre * 0.35, size=n)))  # a noisy 2-core box: 35 % spread


def test_a_swing_within_the_noise_is_not_a_regression() -> None:
    # Same distribution, two draws at n=8: the medians differ by well over 10 % but the interval crosses zero.
    a, b = _run(_noisy(1, 8, 0.1)), _run(_noisy(7, 8, 0.1))
    row = {r.metric: r for r in diff_results(a, b, threshold_pct=10)}["TTFT p50 (ms)"]
    assert row.delta_pct is not None and abs(row.delta_pct) > 10
    assert row.verdict == "within noise" and not row.regressed
    assert row.ci_pct is not None and row.ci_pct[0] < 0 < row.ci_pct[1] and row.n == (8, 8)


def test_a_real_slowdown_is_a_regression() -> None:
    a, b = _run(_noisy(1, 24, 0.1)), _run(_noisy(2, 24, 0.2))
    rows = {r.metric: r for r in diff_results(a, b, threshold_pct=10)}
    assert rows["TTFT p50 (ms)"].verdict == "regressed" and rows["TTFT p50 (ms)"].regressed
    assert rows["E2E p50 (ms)"].verdict == "regressed"
    assert rows["requests/s"].verdict == "regressed"  # throughput judged by resampling requests too
    back = {r.metric: r for r in diff_results(b, a, threshold_pct=10)}
    assert back["TTFT p50 (ms)"].verdict == "improved"


def test_unlike_configs_are_named() -> None:
    a = _run([0.1] * 4, max_tokens=128, warmup_rounds=1)
    b = _run([0.1] * 4, max_tokens=64, warmup_rounds=0, pattern=LoadPattern("concurrency", concurrency=4))
    found = unlike_configs(a, b)
    assert any(f.startswith("max_tokens: 128 vs 64") for f in found)
    assert any(f.startswith("warmup_rounds") for f in found) and any(f.startswith("pattern") for f in found)
    assert unlike_configs(a, a) == []


def test_cli_refuses_unlike_runs_and_marks_regressions_in_every_format(tmp_path: Path) -> None:
    base, slow = tmp_path / "a.json", tmp_path / "b.json"
    _run(_noisy(1, 24, 0.1)).save(base)
    _run(_noisy(2, 24, 0.2)).save(slow)
    other = tmp_path / "c.json"
    _run(_noisy(2, 24, 0.2), max_tokens=16).save(other)

    refused = runner.invoke(bench_cli.app, ["diff", str(base), str(other)])
    assert refused.exit_code == 2 and "max_tokens: 128 vs 16" in refused.output and "--allow-unlike" in refused.output
    allowed = runner.invoke(bench_cli.app, ["diff", str(base), str(other), "--allow-unlike", "-f", "json"])
    assert allowed.exit_code == 0 and "max_tokens" in json.loads(allowed.stdout)["warnings"][0]

    for fmt, needle in (("table", "REGRESSED"), ("md", "**REGRESSED**"), ("csv", "REGRESSED"), ("html", "REGRESSED")):
        res = runner.invoke(bench_cli.app, ["diff", str(base), str(slow), "-f", fmt])
        assert res.exit_code == 0 and needle in res.stdout, (fmt, res.output)
    data = json.loads(runner.invoke(bench_cli.app, ["diff", str(base), str(slow), "-f", "json"]).stdout)
    ttft = next(r for r in data["rows"] if r["metric"] == "TTFT p50 (ms)")
    assert ttft["verdict"] == "regressed" and ttft["regressed"] and len(ttft["ci95_pct"]) == 2
    assert runner.invoke(bench_cli.app, ["diff", str(base), str(slow), "--fail-on-regression"]).exit_code == 1
