"""`lokal bench`: measure models on lokal or any OpenAI-compatible endpoint; `bench diff` compares runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from lokal.bench.config import BenchConfig, LoadPattern, Sweep, default_api_key, parse_models
from lokal.bench.diff import diff_csv, diff_html, diff_markdown, diff_results, diff_table, only_in, unlike_configs
from lokal.bench.metrics import SLO
from lokal.bench.prompts import load_prompts
from lokal.bench.report import (
    FORMATS,
    format_for,
    rich_table,
    to_csv,
    to_json,
    to_markdown,
    verdict_lines,
    write_report,
)
from lokal.bench.result import BenchResult
from lokal.bench.runner import ProgressEvent, run_bench
from lokal.bench.verdict import verdict
from lokal.cli import _common
from lokal.cli._common import BaseUrlOpt, HostOpt, PortOpt

app = typer.Typer(invoke_without_command=True, no_args_is_help=False, add_completion=False)
err = Console(stderr=True)


def _stdout() -> Console:
    """Results console; piped output gets wide lines so no cell (a model name, a verdict) is cut short."""
    console = Console()
    if not console.is_terminal:
        console.width = 200
    return console


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _pattern(concurrency: int, rate: float | None, poisson: bool, max_concurrency: int | None) -> LoadPattern:
    if rate is not None:
        return LoadPattern("poisson" if poisson else "rate", rate=rate, max_concurrency=max_concurrency)
    if concurrency > 1:
        return LoadPattern("concurrency", concurrency=concurrency)
    return LoadPattern()


class _ProgressView:
    """A rich progress bar per model, fed by the runner's progress events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        task = self.tasks.get(ev.model)
        if task is None:
            task = self.tasks[ev.model] = self.progress.add_task(ev.model, total=ev.total)
        desc = f"{ev.model} [dim]{ev.phase} {ev.step}[/dim]"
        if ev.phase == "done":
            self.progress.update(task, total=max(ev.completed, 1), completed=max(ev.completed, 1), description=ev.model)
        else:
            self.progress.update(task, completed=ev.completed, description=desc)


def _emit(result: BenchResult, fmt: str | None, outputs: list[Path], quiet: bool) -> None:
    # One output takes --format when given; several (or none given) take their extension's format.
    forced = fmt if fmt not in (None, "table") and len(outputs) == 1 else None
    for out in outputs:
        written = write_report(result, out, forced or format_for(out))  # type: ignore[arg-type]
        err.print(f"wrote {', '.join(str(p) for p in written)}")
    if fmt in ("json", "csv", "md") and not outputs:
        sys.stdout.write({"json": to_json, "csv": to_csv, "md": to_markdown}[fmt](result))
        return
    if fmt == "html" and not outputs:
        raise _fail("--format html needs --output FILE.html (it writes PNG plots next to it)")
    if not quiet:
        _stdout().print(rich_table(result))
        for i, line in enumerate(verdict_lines(verdict(result))):
            _stdout().print(line, style="bold" if i == 0 else ("yellow" if "SYNTHETIC" in line else "dim"))
    for m in result.models:
        if m.error:
            err.print(f"[{'red' if m.status == 'failed' else 'yellow'}]{m.name}: {m.status}: {m.error}")


@app.callback()
def bench(
    ctx: typer.Context,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            envvar="LOKAL_BENCH_MODELS",
            help="Model alias/id (repeat or comma-separate), or a models.json/.yaml with tags, size, price.",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            "-e",
            envvar="LOKAL_BENCH_ENDPOINT",
            help="Any OpenAI-compatible base URL, used as given [the lokal server's /v1, see --base-url].",
        ),
    ] = None,
    base_url: BaseUrlOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="LOKAL_BENCH_API_KEY", help="Bearer key for the endpoint."),
    ] = None,
    prompts: Annotated[
        str | None,
        typer.Option(
            "--prompts",
            "-p",
            envvar="LOKAL_BENCH_PROMPTS",
            help="JSON/YAML list of prompts; default: the built-in deterministic set.",
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option("--rounds", "-n", envvar="LOKAL_BENCH_ROUNDS", min=1, help="Counted passes over the prompt set."),
    ] = 3,
    warmup: Annotated[
        int, typer.Option("--warmup", envvar="LOKAL_BENCH_WARMUP", min=0, help="Uncounted warm-up passes.")
    ] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", envvar="LOKAL_BENCH_MAX_TOKENS", min=1)] = 128,
    temperature: Annotated[
        float,
        typer.Option("--temperature", envvar="LOKAL_BENCH_TEMPERATURE", help="0 with a seed = deterministic mode."),
    ] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed", envvar="LOKAL_BENCH_SEED")] = 1234,
    stream: Annotated[
        bool,
        typer.Option("--stream/--no-stream", envvar="LOKAL_BENCH_STREAM", help="Streaming gives TTFT and ITL."),
    ] = True,
    ignore_eos: Annotated[
        bool,
        typer.Option("--ignore-eos", help="Ask for exactly max_tokens where supported (vLLM): fair tokens/s."),
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            envvar="LOKAL_BENCH_CONCURRENCY",
            min=1,
            help="Requests kept in flight (closed loop).",
        ),
    ] = 1,
    rate: Annotated[
        float | None,
        typer.Option("--rate", envvar="LOKAL_BENCH_RATE", help="Open loop: requests per second."),
    ] = None,
    poisson: Annotated[bool, typer.Option("--poisson", help="With --rate: Poisson arrivals.")] = False,
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency", help="Cap in-flight with --rate.")] = None,
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="Load levels, e.g. concurrency:1,2,4,8 or rate:1,2,4 or poisson:1,2,4."),
    ] = None,
    slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms", help="Goodput SLO on TTFT.")] = None,
    slo_itl_ms: Annotated[float | None, typer.Option("--slo-itl-ms", help="Goodput SLO on time per token.")] = None,
    slo_e2e_ms: Annotated[float | None, typer.Option("--slo-e2e-ms")] = None,
    slo_attainment: Annotated[float, typer.Option("--slo-attainment", min=0.0, max=1.0)] = 0.9,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            envvar="LOKAL_BENCH_DURATION",
            help="Max seconds per load level (stop sending after).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", envvar="LOKAL_BENCH_TIMEOUT", help="Per-request limit, seconds.")
    ] = 300.0,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="tokenizer.json (or cached HF name) to count tokens when the server gives no usage.",
        ),
    ] = None,
    extra_body: Annotated[str | None, typer.Option("--extra-body", help="JSON merged into every request.")] = None,
    server_stats: Annotated[bool, typer.Option("--server-stats/--no-server-stats")] = True,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", envvar="LOKAL_BENCH_FORMAT", help=f"One of {', '.join(FORMATS)}."),
    ] = None,
    output: Annotated[
        list[Path] | None,
        typer.Option("--output", "-o", envvar="LOKAL_BENCH_OUTPUT", help="Report file(s); format from the extension."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 if any model failed (default: only if all).")
    ] = False,
) -> None:
    """Benchmark models: TTFT, ITL/TPOT, latency, tokens/s and goodput under a chosen load pattern.

    Example: lokal bench -m qwen2.5-0.5b --rounds 5 -o r.json -o r.html
    """
    if ctx.invoked_subcommand is not None:
        return
    if fmt is not None and fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}")
    if not model:
        raise _fail("give at least one --model (or LOKAL_BENCH_MODELS)")
    try:
        slo = SLO(
            ttft_s=slo_ttft_ms / 1000 if slo_ttft_ms is not None else None,
            itl_s=slo_itl_ms / 1000 if slo_itl_ms is not None else None,
            e2e_s=slo_e2e_ms / 1000 if slo_e2e_ms is not None else None,
            attainment=slo_attainment,
        )
        config = BenchConfig(
            models=parse_models(model),
            endpoint=endpoint or _common.api_url(base_url, host, port),
            api_key=api_key or default_api_key(endpoint),
            prompts=load_prompts(prompts),
            rounds=rounds,
            warmup_rounds=warmup,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            stream=stream,
            ignore_eos=ignore_eos,
            extra_body=json.loads(extra_body) if extra_body else {},
            pattern=_pattern(concurrency, rate, poisson, max_concurrency),
            sweep=Sweep.parse(sweep, max_concurrency=max_concurrency) if sweep else None,
            slo=slo if slo.is_set() else None,
            max_duration_s=duration,
            request_timeout_s=timeout,
            tokenizer=tokenizer,
            server_stats=server_stats,
        )
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc

    if quiet:
        result = run_bench(config)
    else:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        ) as progress:
            result = run_bench(config, on_progress=_ProgressView(progress))
    _emit(result, fmt, list(output or []), quiet)
    if result.all_failed or (strict and result.any_failed):
        raise typer.Exit(1)


DIFF_FORMATS = ("table", "md", "json", "csv", "html")


@app.command("diff")
def diff(
    a: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Baseline run (JSON).")],
    b: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="New run (JSON).")],
    threshold: Annotated[
        float, typer.Option("--threshold", help="Least change, percent, that can count as a regression.")
    ] = 10.0,
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(DIFF_FORMATS)}.")] = "table",
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", help="Exit 1 on a regression.")] = False,
    allow_unlike: Annotated[
        bool,
        typer.Option("--allow-unlike", help="Compare runs made under different settings anyway (with a warning)."),
    ] = False,
) -> None:
    """Compare two `lokal bench` JSON runs, model by model; a regression must exceed the runs' own noise."""
    if fmt not in DIFF_FORMATS:
        raise _fail(f"--format must be one of {', '.join(DIFF_FORMATS)}")
    try:
        ra, rb = BenchResult.load(a), BenchResult.load(b)
    except (ValueError, KeyError) as exc:
        raise _fail(str(exc)) from exc
    unlike = unlike_configs(ra, rb)
    if unlike and not allow_unlike:
        raise _fail(
            f"{a.name} and {b.name} were run under different settings, so their figures are not comparable: "
            + "; ".join(unlike)
            + ". Rerun with the same settings, or pass --allow-unlike to compare anyway."
        )
    warnings = [f"runs differ in settings (--allow-unlike): {'; '.join(unlike)}"] if unlike else []
    rows = diff_results(ra, rb, threshold_pct=threshold)
    gone, new = only_in(ra, rb)
    if fmt == "json":
        body = {"rows": [r.to_dict() for r in rows], "only_in_a": gone, "only_in_b": new, "warnings": warnings}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    elif fmt == "md":
        sys.stdout.write(diff_markdown(rows, warnings))
    elif fmt == "csv":
        sys.stdout.write(diff_csv(rows))
    elif fmt == "html":
        sys.stdout.write(diff_html(rows, warnings, title=f"{a.name} -> {b.name}"))
    else:
        _stdout().print(diff_table(rows, title=f"{a.name} -> {b.name}"))
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}")
    if gone or new:
        err.print(f"only in A: {gone or '-'}; only in B: {new or '-'}")
    regressions = [r for r in rows if r.regressed]
    noisy = sum(r.verdict == "within noise" for r in rows)
    err.print(
        f"{len(regressions)} regression(s) beyond {threshold:g}% and the runs' noise"
        + (f"; {noisy} change(s) within noise (95% bootstrap interval crosses zero)" if noisy else "")
    )
    if fail_on_regression and regressions:
        raise typer.Exit(1)


@app.command("report")
def report(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A run saved as JSON.")],
    output: Annotated[list[Path], typer.Option("--output", "-o", help="Report file(s): .csv .md .html .json")],
) -> None:
    """Render a saved JSON run as CSV, Markdown or HTML (with plots)."""
    result = BenchResult.load(source)
    for out in output:
        written = write_report(result, out)
        err.print(f"wrote {', '.join(str(p) for p in written)}")
