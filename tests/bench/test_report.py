"""Reports: JSON round-trips, CSV parses, Markdown and HTML (with real PNGs) are written; diff finds changes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from lokal.bench.config import Sweep
from lokal.bench.diff import diff_markdown, diff_results, only_in
from lokal.bench.metrics import SLO
from lokal.bench.report import format_for, rich_table, to_markdown, write_report
from lokal.bench.result import BenchResult
from lokal.bench.runner import run_bench
from tests.bench.conftest import Factory
from tests.bench.helpers import config
from tests.support.scripted import Script

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def result(scripted: Factory) -> BenchResult:
    srv = scripted(
        scripts={
            "fast": Script(ttft_s=0.005, itl_s=0.001, tokens=6),
            "slow": Script(ttft_s=0.02, itl_s=0.002, tokens=6),
        },
        serve_ps=True,
    )
    return run_bench(config(srv, "fast", "slow", "absent", sweep=Sweep.parse("concurrency:1,2"), slo=SLO(ttft_s=0.5)))


def test_json_is_authoritative_and_round_trips(result: BenchResult, tmp_path: Path) -> None:
    (path,) = write_report(result, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "lokal.bench/1"
    assert [m["status"] for m in data["models"]] == ["ok", "ok", "failed"]
    assert len(data["models"][0]["steps"]) == 2 and len(data["models"][0]["steps"][0]["requests"]) == 4
    again = BenchResult.load(path)
    a, b = result.models[0].steps[1].summary, again.models[0].steps[1].summary
    assert b.stat("ttft_s") == a.stat("ttft_s") and b.output_throughput == a.output_throughput
    assert again.models[0].records[0].itl_s == result.models[0].records[0].itl_s
    assert again.models[0].server == result.models[0].server


def test_csv_has_a_row_per_model_and_level(result: BenchResult, tmp_path: Path) -> None:
    (path,) = write_report(result, tmp_path / "r.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(r["model"], r["load"]) for r in rows] == [
        ("fast", "concurrency=1"),
        ("fast", "concurrency=2"),
        ("slow", "concurrency=1"),
        ("slow", "concurrency=2"),
        ("absent", "concurrency=1"),  # stopped at its first 404: no second level
    ]
    fast, slow = float(rows[0]["ttft_s_p50"]), float(rows[2]["ttft_s_p50"])
    assert 0.005 <= fast < slow
    assert rows[0]["completion_tokens_mean"] == "6.0" and rows[0]["token_source"] == "usage"
    assert rows[4]["status"] == "failed" and "404" in rows[4]["error"]


def test_markdown_and_html_with_plots(result: BenchResult, tmp_path: Path) -> None:
    (md,) = write_report(result, tmp_path / "r.md")
    text = md.read_text()
    assert "| fast | concurrency=1 | ok" in text and "## Errors" in text and "absent" in text
    written = write_report(result, tmp_path / "r.html")
    html_path, pngs = written[0], written[1:]
    assert {p.name for p in pngs} == {"latency_distribution.png", "ttft_vs_concurrency.png", "tokens_per_second.png"}
    page = html_path.read_text()
    for png in pngs:
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000
        assert f'src="r_plots/{png.name}"' in page
    assert "<table>" in page and "slow" in page


def test_terminal_table_and_format_detection(result: BenchResult) -> None:
    table = rich_table(result)
    assert table.row_count == 5
    assert format_for("x.HTML") == "html" and format_for("x.markdown") == "md"
    with pytest.raises(ValueError):
        format_for("x.txt")
    assert "best" in to_markdown(result)  # the sweep's best level is marked


def test_diff_flags_a_slower_run(scripted: Factory) -> None:
    before = scripted(scripts={"m": Script(ttft_s=0.01, itl_s=0.001, tokens=5), "gone": Script(tokens=2)})
    # 25x slower: one request of `before` held up by a busy neighbour must not bring the medians' intervals together
    after = scripted(scripts={"m": Script(ttft_s=0.25, itl_s=0.001, tokens=5)})
    a = run_bench(config(before, "m", "gone"))
    b = run_bench(config(after, "m"))
    rows = {r.metric: r for r in diff_results(a, b, threshold_pct=10)}
    assert rows["TTFT p50 (ms)"].regressed and rows["TTFT p50 (ms)"].delta_pct is not None
    assert rows["TTFT p50 (ms)"].delta_pct > 100
    assert not diff_results(a, a)[0].regressed
    assert only_in(a, b) == (["gone"], [])
    assert "TTFT p50 (ms)" in diff_markdown(list(rows.values()))
