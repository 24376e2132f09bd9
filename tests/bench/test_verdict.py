"""The bench report leads with a verdict; plots stay honest (no one-level curves, one colour per model)."""

from __future__ import annotations

import re
from pathlib import Path

from lokal.bench.metrics import SLO
from lokal.bench.plots import colours, has_load_curve
from lokal.bench.report import to_markdown, write_report
from lokal.bench.runner import run_bench
from lokal.bench.verdict import verdict
from tests.bench.conftest import Factory
from tests.bench.helpers import config
from tests.support.scripted import Script


def test_verdict_names_the_model_that_meets_the_slo_and_why(scripted: Factory, tmp_path: Path) -> None:
    srv = scripted(
        scripts={"fast": Script(ttft_s=0.005, tokens=4), "slow": Script(ttft_s=0.3, tokens=4)}, serve_ps=True
    )
    res = run_bench(config(srv, "fast", "slow", slo=SLO(ttft_s=0.15)))  # 145 ms from either model
    v = verdict(res)
    assert v.best is not None and v.best.model.name == "fast"
    assert "most goodput" in v.rule and "TTFT ≤ 150 ms" in v.rule
    assert v.headline.startswith("fast meets the SLO") and "n=4" in v.headline and "95 MiB" in v.headline
    assert "slow missed the SLO" in v.headline and "TTFT p95" in v.headline

    html_path, *pngs = write_report(res, tmp_path / "r.html")
    page = html_path.read_text()
    # The verdict comes before any table of figures, and the raw environment is tucked away at the end.
    assert page.index('id="verdict"') < page.index("Key figures") < page.index("<details>")
    assert re.search(r'<p class="headline">fast meets the SLO', page)
    assert "n=4" in page and "best =" in page
    assert not any(p.name == "ttft_vs_concurrency.png" for p in pngs)  # one load level: no curve to draw
    md = to_markdown(res)
    assert md.index("## Verdict") < md.index("## All figures") and "fast meets the SLO" in md


def test_no_slo_means_best_is_throughput_and_says_so(scripted: Factory) -> None:
    srv = scripted(scripts={"a": Script(itl_s=0.004, tokens=8), "b": Script(itl_s=0.0005, tokens=8)})
    v = verdict(run_bench(config(srv, "a", "b")))
    assert v.best is not None and v.best.model.name == "b"
    assert "no SLO was set" in v.rule


def test_load_curve_only_with_two_levels_and_colours_are_per_model(scripted: Factory) -> None:
    from lokal.bench.config import Sweep

    srv = scripted(scripts={"a": Script(ttft_s=0.01, tokens=3), "b": Script(ttft_s=0.01, tokens=3)})
    one = run_bench(config(srv, "a", "b"))
    assert not has_load_curve(one)
    two = run_bench(config(srv, "a", "b", sweep=Sweep.parse("concurrency:1,4")))
    assert has_load_curve(two)
    assert colours(two) == {"a": "C0", "b": "C1"} == colours(one)
