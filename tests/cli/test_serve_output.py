"""What `lokal serve` says about its default model: the console side of lokal.server.startup's answers."""

from __future__ import annotations

import io

from rich.console import Console

from lokal.catalog.spec import Variant
from lokal.cli.serve import download_bar, report_prepared
from lokal.server.startup import Prepared


def _said(*prepared: Prepared) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200)
    for p in prepared:
        report_prepared(console, p)
    return out.getvalue()


def test_a_real_default_model_is_named_with_how_it_got_ready() -> None:
    said = _said(Prepared("tiny", "cached", "tiny:q4"), Prepared("qwen", "downloaded", "qwen:q4"))
    assert "default model: tiny (tiny:q4, cached)" in said and "default model: qwen (downloaded)" in said


def test_the_demo_is_labelled_synthetic_with_why_and_how_to_get_a_real_model() -> None:
    said = _said(Prepared("lokal-demo-synthetic", "demo", reason="downloads are off", wanted="qwen2.5-0.5b"))
    assert "SYNTHETIC" in said and "No real model is available: downloads are off" in said
    assert "lokal model download qwen2.5-0.5b" in said and "Serving lokal-demo-synthetic instead" in said


def test_a_download_is_announced_and_its_bar_follows_it() -> None:
    out = io.StringIO()
    variant = Variant(id="qwen:q4", engine="llamacpp", size_bytes=10)
    with download_bar(Console(file=out, width=200))("qwen", variant) as progress:
        assert progress is not None
        progress(5, 10)
    assert "default model qwen is not cached; downloading qwen:q4 ..." in out.getvalue()
