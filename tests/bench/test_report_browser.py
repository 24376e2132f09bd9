"""The bench HTML report as a person sees it: rendered by headless Chromium (Debian's /usr/bin/chromium via
Playwright; its own browser download is never used), with a screenshot kept and the verdict read off the page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lokal.bench.metrics import SLO
from lokal.bench.report import write_report
from lokal.bench.runner import run_bench
from tests.bench.conftest import Factory
from tests.bench.helpers import config
from tests.support.scripted import Script

CHROMIUM = Path(os.environ.get("LOKAL_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
)


def test_bench_html_renders_its_verdict_first_in_chromium(scripted: Factory, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    srv = scripted(
        scripts={"fast": Script(ttft_s=0.005, tokens=4), "slow": Script(ttft_s=0.3, tokens=4)}, serve_ps=True
    )
    res = run_bench(config(srv, "fast", "slow", slo=SLO(ttft_s=0.15)))  # 145 ms from either model
    html_path, *pngs = write_report(res, tmp_path / "report.html")
    shot = tmp_path / "report.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            outside: list[str] = []
            # A report is a file someone mails around: it must render from itself and its plots alone.
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith("file://") else None)
            page.goto(html_path.resolve().as_uri())
            page.wait_for_load_state("load")
            verdict = page.locator("#verdict")
            headline = verdict.locator(".headline").inner_text()
            assert headline.startswith("fast meets the SLO") and "n=4" in headline
            assert "slow missed the SLO" in headline
            assert "best =" in verdict.inner_text()
            # The verdict is what a reader sees first: above the fold, before the figures.
            box = verdict.bounding_box()
            assert box is not None and box["y"] < 900
            figures = page.get_by_text("Key figures").first.bounding_box()
            assert figures is not None and box["y"] < figures["y"]
            # Every plot the page shows was written beside it and actually decoded by the browser.
            widths = page.eval_on_selector_all("img", "imgs => imgs.map((i) => i.naturalWidth)")
            assert len(widths) == len(pngs) and all(w > 0 for w in widths)
            page.screenshot(path=str(shot), full_page=True)
            assert not outside, outside
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000  # a real rendering, kept as the test's artifact
