"""`lokal compare`: a small and a large model side by side, the hybrid draft->refine pattern, and costs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from lokal.bench.compare import CompareConfig, HybridPolicy, annotation_template, run_compare
from lokal.bench.compare_report import rich_tables, to_html, to_json, to_markdown, write_compare
from lokal.bench.config import ModelEntry, Price, default_api_key
from lokal.bench.costs import LocalCost, PriceTable
from lokal.bench.prompts import load_prompts
from lokal.cli import _common
from lokal.cli._common import BaseUrlOpt, HostOpt, PortOpt

err = Console(stderr=True)


def _price(spec: str | None) -> Price | None:
    if not spec:
        return None
    inp, _, out = spec.partition(",")
    return Price(input_per_1m=float(inp), output_per_1m=float(out or inp))


def command(
    small: Annotated[str, typer.Option("--small", "-s", envvar="LOKAL_COMPARE_SMALL", help="The small model.")],
    large: Annotated[str, typer.Option("--large", "-l", envvar="LOKAL_COMPARE_LARGE", help="The large model.")],
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            "-e",
            envvar=["LOKAL_COMPARE_ENDPOINT", "LOKAL_BENCH_ENDPOINT"],
            help="Any OpenAI-compatible base URL, used as given [the lokal server's /v1, see --base-url].",
        ),
    ] = None,
    base_url: BaseUrlOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    large_endpoint: Annotated[
        str | None,
        typer.Option("--large-endpoint", help="Where the large model lives, if elsewhere (e.g. a GPU box)."),
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="LOKAL_BENCH_API_KEY")] = None,
    prompts: Annotated[str | None, typer.Option("--prompts", "-p", help="JSON/YAML prompt list.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", "-n", min=1)] = 1,
    warmup: Annotated[int, typer.Option("--warmup", min=0)] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 256,
    stream: Annotated[bool, typer.Option("--stream/--no-stream")] = True,
    hybrid: Annotated[bool, typer.Option("--hybrid/--no-hybrid", help="Run draft->refine.")] = True,
    refine_over_chars: Annotated[
        int | None, typer.Option("--refine-over-chars", help="Refine when the prompt is longer than this.")
    ] = None,
    refine_under_chars: Annotated[
        int | None, typer.Option("--refine-under-chars", help="Refine when the draft is shorter than this.")
    ] = None,
    refine_topics: Annotated[
        str | None, typer.Option("--refine-topics", help="Comma-separated flagged words, e.g. medical,legal.")
    ] = None,
    refine_below_logprob: Annotated[
        float | None,
        typer.Option(
            "--refine-below-logprob",
            help="Refine when the draft's mean token logprob is lower (needs logprobs).",
        ),
    ] = None,
    refine_unknown: Annotated[
        bool, typer.Option("--refine-unknown-confidence", help="Refine when the endpoint gives no logprobs.")
    ] = False,
    judge: Annotated[str | None, typer.Option("--judge", help="Model that scores outputs 1-5 on the rubric.")] = None,
    annotations: Annotated[
        Path | None,
        typer.Option("--annotations", exists=True, dir_okay=False, help="Filled-in scores (from --write-annotations)."),
    ] = None,
    write_annotations: Annotated[
        Path | None, typer.Option("--write-annotations", help="Write a template for hand scoring.")
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices", exists=True, dir_okay=False, help="Price table: {model: {input, output}} $/1M tokens."
        ),
    ] = None,
    small_price: Annotated[str | None, typer.Option("--small-price", help="IN,OUT $/1M tokens.")] = None,
    large_price: Annotated[str | None, typer.Option("--large-price", help="IN,OUT $/1M tokens.")] = None,
    device_cost: Annotated[float, typer.Option("--device-cost-per-hour", help="Local $/hour.")] = 0.0,
    watts: Annotated[float | None, typer.Option("--watts", help="Mean power draw for an energy estimate.")] = None,
    kwh_price: Annotated[float, typer.Option("--kwh-price")] = 0.30,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, md or html.")] = "table",
    output: Annotated[
        list[Path] | None, typer.Option("--output", "-o", help="Report file(s): .json, .md or .html.")
    ] = None,
) -> None:
    """SLM vs LLM on the same prompts: latency, tokens, tokens/s, memory, outputs, rubric scores, costs.

    Example: lokal compare -s qwen2.5-0.5b -l phi-4-mini --refine-over-chars 300 --large-price 0.15,0.6
    """
    if fmt not in ("table", "json", "md", "html"):
        err.print("[red]error:[/red] --format must be table, json, md or html")
        raise typer.Exit(2)
    try:
        policy = (
            HybridPolicy(
                prompt_chars_over=refine_over_chars,
                draft_chars_under=refine_under_chars,
                topics=tuple(t.strip() for t in (refine_topics or "").split(",") if t.strip()),
                min_confidence=refine_below_logprob,
                refine_unknown_confidence=refine_unknown,
            )
            if hybrid
            else None
        )
        cfg = CompareConfig(
            small=ModelEntry(name=small, price=_price(small_price)),
            large=ModelEntry(name=large, endpoint=large_endpoint, price=_price(large_price)),
            endpoint=endpoint or _common.api_url(base_url, host, port),
            api_key=api_key or default_api_key(endpoint),
            prompts=load_prompts(prompts),
            rounds=rounds,
            warmup_rounds=warmup,
            max_tokens=max_tokens,
            stream=stream,
            hybrid=policy,
            judge=ModelEntry(name=judge) if judge else None,
            annotations=annotations,
            prices=PriceTable.load(prices) if prices else PriceTable(),
            local=LocalCost(device_cost_per_hour=device_cost, watts=watts, kwh_price=kwh_price),
        )
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        tasks: dict[str, TaskID] = {}
        names = {"small": small, "large": large, "refine": f"refine with {large}", "judge": f"judge {judge}"}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(names.get(stage, stage), total=total)
            progress.update(tasks[stage], completed=done, total=total)

        result = run_compare(cfg, on_progress=on_progress)
        for stage in ("refine", "judge"):
            if stage in tasks:
                progress.update(tasks[stage], completed=progress.tasks[tasks[stage]].total)
    for out in output or []:
        try:
            err.print(f"wrote {write_compare(result, out)}")
        except ValueError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    if write_annotations is not None:
        write_annotations.write_text(json.dumps(annotation_template(result), indent=2), encoding="utf-8")
        err.print(f"wrote {write_annotations} (fill in 1-5 scores, then pass it with --annotations)")
    if fmt == "json":
        sys.stdout.write(to_json(result) + "\n")
    elif fmt == "md":
        sys.stdout.write(to_markdown(result))
    elif fmt == "html":
        sys.stdout.write(to_html(result))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = 200  # piped: full model names, one row per role
        console.print(rich_tables(result))
    for m in (result.small, result.large):
        if m.error:
            err.print(f"[{'red' if m.status == 'failed' else 'yellow'}]{m.name}: {m.status}: {m.error}")
    if result.small.status == "failed" and result.large.status == "failed":
        raise typer.Exit(1)
