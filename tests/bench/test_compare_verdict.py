"""`lokal compare` states a conclusion, reports progress, writes HTML, and says when logprobs are missing."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lokal.bench.compare import CompareConfig, HybridPolicy, run_compare
from lokal.bench.compare_report import write_compare
from lokal.bench.config import ModelEntry, Price
from lokal.cli.compare import command as compare_command
from tests.bench.conftest import Factory
from tests.bench.helpers import prompts
from tests.support.scripted import Script


def _cfg(base: str, policy: HybridPolicy) -> CompareConfig:
    return CompareConfig(
        small=ModelEntry(name="qwen2.5-0.5b-instruct", price=Price(input_per_1m=0.1, output_per_1m=0.4)),
        large=ModelEntry(name="phi-4-mini-instruct", price=Price(input_per_1m=2.5, output_per_1m=10.0)),
        endpoint=base,
        prompts=prompts(3),
        warmup_rounds=0,
        hybrid=policy,
    )


def _server(scripted: Factory) -> str:
    return scripted(
        scripts={
            "qwen2.5-0.5b-instruct": Script(ttft_s=0.002, itl_s=0.001, tokens=6),  # no logprob: like many servers
            "phi-4-mini-instruct": Script(ttft_s=0.03, itl_s=0.003, tokens=12),
        }
    ).base_url


def test_conclusion_progress_and_missing_logprobs(scripted: Factory, tmp_path: Path) -> None:
    seen: list[str] = []
    res = run_compare(
        _cfg(_server(scripted), HybridPolicy(min_confidence=-1.0)), on_progress=lambda s, d, t: seen.append(s)
    )
    assert {"small", "large", "refine"} <= set(seen)
    sentence = write_compare(res, tmp_path / "c.md").read_text()
    assert "qwen2.5-0.5b-instruct was" in sentence and "faster than phi-4-mini-instruct" in sentence
    assert "cheaper (cloud price)" in sentence
    assert "Hybrid (refining 0 of 3)" in sentence and "worth it here" in sentence
    assert "the endpoint gave no logprobs for 3 of 3 drafts" in sentence and "--refine-unknown-confidence" in sentence
    page = write_compare(res, tmp_path / "c.html").read_text()
    assert page.index('id="verdict"') < page.index("<table>") and "no logprobs" in page


def test_hybrid_that_always_refines_is_not_worth_it(scripted: Factory) -> None:
    res = run_compare(_cfg(_server(scripted), HybridPolicy(draft_chars_under=10_000)))
    from lokal.bench.compare_verdict import conclusion

    text = conclusion(res)
    assert "refining 3 of 3" in text and "not worth it here" in text


def test_cli_writes_html_and_keeps_full_names(scripted: Factory, tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command()(compare_command)
    out = tmp_path / "c.html"
    args = ["-s", "qwen2.5-0.5b-instruct", "-l", "phi-4-mini-instruct", "-e", _server(scripted), "--warmup", "0"]
    res = CliRunner().invoke(app, [*args, "-o", str(out), "--refine-over-chars", "5"])
    assert res.exit_code == 0, res.output
    assert "qwen2.5-0.5b-instruct" in res.stdout and "phi-4-mini-instruct" in res.stdout and "…" not in res.stdout
    assert out.read_text().startswith("<!doctype html>")
