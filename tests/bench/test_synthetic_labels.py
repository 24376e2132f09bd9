"""Every report format says "synthetic" next to a synthetic model's figures, and only there."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lokal.bench.compare import CompareConfig, HybridPolicy, run_compare
from lokal.bench.compare_report import to_html as compare_html
from lokal.bench.compare_report import to_markdown as compare_md
from lokal.bench.compare_report import write_compare
from lokal.bench.config import ModelEntry
from lokal.bench.report import rich_table, write_report
from lokal.bench.result import BenchResult
from lokal.bench.runner import run_bench
from lokal.cli import bench as bench_cli
from tests.bench.conftest import Factory
from tests.bench.helpers import config, prompts
from tests.support.scripted import Script
from tests.support.server import LokalServer

SCRIPTS = {
    "phi-4-mini": Script(ttft_s=0.002, tokens=4, synthetic=True),
    "real": Script(ttft_s=0.002, tokens=4, synthetic=False),
    "other": Script(ttft_s=0.002, tokens=4),  # a non-lokal endpoint: says nothing either way
}


@pytest.fixture
def result(scripted: Factory) -> BenchResult:
    srv = scripted(scripts=SCRIPTS, serve_ps=True)
    return run_bench(config(srv, "phi-4-mini", "real", "other"))


def test_the_flag_comes_from_the_endpoints_model_card(result: BenchResult) -> None:
    assert [m.synthetic for m in result.models] == [True, False, None]
    assert [m.label for m in result.models] == ["phi-4-mini [SYNTHETIC]", "real", "other"]


def test_every_bench_format_labels_the_synthetic_row(result: BenchResult, tmp_path: Path) -> None:
    (j,) = write_report(result, tmp_path / "r.json")
    models = json.loads(j.read_text())["models"]
    assert [m["synthetic"] for m in models] == [True, False, None]
    assert BenchResult.load(j).models[0].synthetic is True

    (c,) = write_report(result, tmp_path / "r.csv")
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(c.read_text()))}
    assert rows["phi-4-mini"]["synthetic"] == "true" and rows["real"]["synthetic"] == "false"

    (md,) = write_report(result, tmp_path / "r.md")
    table_rows = [line for line in md.read_text().splitlines() if line.startswith("| phi-4-mini")]
    assert table_rows and all("[SYNTHETIC]" in line for line in table_rows)
    assert not [line for line in md.read_text().splitlines() if line.startswith("| real") and "SYNTHETIC" in line]
    assert "random weights" in md.read_text()  # the verdict says what synthetic means

    html_path, *_ = write_report(result, tmp_path / "r.html")
    page = html_path.read_text()
    assert page.count("phi-4-mini [SYNTHETIC]") >= 3 and "random weights" in page
    assert "phi-4-mini [SYNTHETIC]" in str([c._cells for c in rich_table(result).columns][0])


def test_no_synthetic_model_no_label(scripted: Factory, tmp_path: Path) -> None:
    srv = scripted(scripts={"real": Script(tokens=3, synthetic=False)})
    res = run_bench(config(srv, "real"))
    for suffix in ("md", "html", "json"):
        (path, *_) = write_report(res, tmp_path / f"r.{suffix}")
        text = path.read_text().replace('"synthetic": false', "")
        assert "synthetic" not in text.lower(), suffix


def test_compare_reports_label_synthetic_models(scripted: Factory, tmp_path: Path) -> None:
    srv = scripted(scripts={"small": Script(tokens=4, synthetic=True), "large": Script(tokens=8, synthetic=False)})
    cfg = CompareConfig(
        small=ModelEntry(name="small"),
        large=ModelEntry(name="large"),
        endpoint=srv.base_url,
        prompts=prompts(2),
        warmup_rounds=0,
        hybrid=HybridPolicy(draft_chars_under=1000),
    )
    res = run_compare(cfg)
    md = compare_md(res)
    assert "| small | small [SYNTHETIC] |" in md and "small [SYNTHETIC] -> large" in md
    assert "outputs and any quality score are noise" in md
    assert "small [SYNTHETIC]" in compare_html(res)
    data = json.loads(write_compare(res, tmp_path / "c.json").read_text())
    assert data["models"]["small"]["synthetic"] is True and data["models"]["large"]["synthetic"] is False
    assert "SYNTHETIC" in data["conclusion"]


def test_bench_against_real_lokal_labels_the_synthetic_tiny_model(lokal_server: LokalServer, tmp_path: Path) -> None:
    """The tiny test GGUF is written by lokal's synthetic writer: the running server says so via /lokal/ps."""
    out = tmp_path / "r.md"
    args = ["-e", lokal_server.base_url, "-m", "tiny", "-n", "1", "--warmup", "0", "--max-tokens", "4", "-q"]
    res = CliRunner().invoke(bench_cli.app, [*args, "-p", str(_one_prompt(tmp_path)), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "| tiny [SYNTHETIC] |" in out.read_text()


def _one_prompt(tmp_path: Path) -> Path:
    f = tmp_path / "p.json"
    f.write_text(json.dumps(["hi"]))
    return f
