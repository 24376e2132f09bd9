"""End to end against a real `lokal serve` running the tiny random-weight model (fixture `lokal_server`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lokal.bench.compare import CompareConfig, HybridPolicy, run_compare
from lokal.bench.config import BenchConfig, LoadPattern, ModelEntry
from lokal.bench.prompts import load_prompts
from lokal.bench.report import write_report
from lokal.bench.runner import run_bench
from lokal.cli import bench as bench_cli
from tests.support.server import LokalServer


def test_bench_tiny_and_an_unknown_model(lokal_server: LokalServer, tmp_path: Path) -> None:
    cfg = BenchConfig(
        models=[ModelEntry(name="no-such-model"), ModelEntry(name="tiny")],
        endpoint=lokal_server.base_url,
        prompts=load_prompts(None)[:3],
        rounds=2,
        warmup_rounds=1,
        max_tokens=16,
        pattern=LoadPattern("concurrency", concurrency=2),
    )
    res = run_bench(cfg)
    missing, tiny = res.models
    assert missing.status == "failed" and missing.error  # recorded, and the run went on
    assert tiny.status == "ok", tiny.error
    sm = tiny.steps[0].summary
    assert sm.success == 6 and sm.errors == 0
    assert sm.token_source == "usage"  # lokal honours stream_options.include_usage
    ttft, e2e, tokens = sm.stat("ttft_s"), sm.stat("e2e_s"), sm.stat("completion_tokens")
    assert ttft is not None and e2e is not None and tokens is not None
    assert 0 < ttft.p50 <= e2e.p50
    assert tokens.min >= 1 and tokens.max <= 16
    assert sm.output_throughput > 0
    assert tiny.server is not None and tiny.server.memory_bytes and tiny.server.memory_bytes > 0
    assert tiny.server.load_seconds is not None
    assert not res.all_failed

    (j,) = write_report(res, tmp_path / "r.json")
    assert json.loads(j.read_text())["models"][1]["status"] == "ok"
    (c,) = write_report(res, tmp_path / "r.csv")
    assert [r["status"] for r in csv.DictReader(io.StringIO(c.read_text()))] == ["failed", "ok"]
    html, *pngs = write_report(res, tmp_path / "r.html")
    # One load level: latency and tokens/s plots, and no degenerate "vs concurrency" curve.
    assert html.exists() and len(pngs) == 2 and all(p.stat().st_size > 0 for p in pngs)
    assert "tiny [SYNTHETIC]" in html.read_text()  # the tiny GGUF comes from lokal's synthetic writer


def test_cli_against_lokal(lokal_server: LokalServer, tmp_path: Path) -> None:
    out, prompts = tmp_path / "r.json", tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["Say hello.", "Count to three."]))
    args = f"-e {lokal_server.base_url} -m tiny -m nope -p {prompts} -n 1 --max-tokens 8 -o {out}"
    res = CliRunner().invoke(bench_cli.app, args.split())
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [m["status"] for m in data["models"]] == ["ok", "failed"]


def test_compare_tiny_and_tiny_coder(lokal_server: LokalServer) -> None:
    cfg = CompareConfig(
        small=ModelEntry(name="tiny"),
        large=ModelEntry(name="tiny-coder"),
        endpoint=lokal_server.base_url,
        prompts=load_prompts(None)[:2],
        max_tokens=12,
        hybrid=HybridPolicy(topics=("australia",)),
    )
    res = run_compare(cfg)
    assert res.small.status == "ok" and res.large.status == "ok"
    assert res.hybrid is not None
    assert [h.refined for h in res.hybrid] == [True, False]  # only the first prompt names the flagged topic
    assert res.hybrid[0].refine_s is not None and res.hybrid[0].refine_s > 0
    blended = sum(h.total_s or 0.0 for h in res.hybrid)
    assert res.costs["hybrid"].device_seconds == pytest.approx(blended)  # draft + refine device time
    assert res.costs["hybrid"].requests == 2


def test_bench_client_reads_logprobs(lokal_server: LokalServer) -> None:
    import asyncio

    from lokal.bench.client import BenchClient, RequestParams

    prompt = load_prompts(None)[0]

    async def go() -> tuple[bool, list[bool], list[float | None]]:
        async with BenchClient(lokal_server.base_url) as client:
            params = RequestParams(max_tokens=4, logprobs=True)
            recs = [await client.chat("tiny", prompt, params) for _ in range(2)]
            return client.logprobs_refused, [r.ok for r in recs], [r.mean_logprob for r in recs]

    refused, oks, means = asyncio.run(go())
    assert not refused  # lokal computes logprobs (issue 12)
    assert oks == [True, True] and all(m is not None and m <= 0 for m in means)
