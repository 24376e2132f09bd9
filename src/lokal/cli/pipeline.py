"""`lokal pipeline "TASK"`: plan -> solve each step on its routed model -> refine, with a JSONL trace."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lokal.cli import _common
from lokal.config import get_settings
from lokal.errors import LokalError

out = Console()
err = Console(stderr=True)


def command(
    task: Annotated[str, typer.Argument(help="What to do, in plain words.")],
    max_steps: Annotated[int, typer.Option("--max-steps", help="At most this many planned steps.")] = 4,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Per call.")] = 512,
    router: Annotated[str, typer.Option("--router", "-r", help="'auto' or a preset name.")] = "auto",
    trace: Annotated[
        Path | None,
        typer.Option("--trace", help="JSONL trace (default: LOKAL_HOME/traces/pipeline-*.jsonl)."),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not reuse or store step answers.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result at the end.")] = False,
    home: Annotated[Path | None, typer.Option("--home")] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", "-u", envvar="LOKAL_BASE_URL", help="The lokal server (/v1 optional)."),
    ] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Router catalog file.")] = None,
) -> None:
    """Plan TASK with a general model, solve each step with the routed model, condense with a summarizer."""
    from lokal.router.factory import build_router
    from lokal.router.pipeline import Pipeline
    from lokal.router.trace import read_trace, simulate_costs

    settings = get_settings()
    h = home or settings.home
    trace_id = uuid.uuid4().hex[:16]
    trace_path = trace or h / "traces" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}-{trace_id[:6]}.jsonl"
    try:
        r = build_router(
            home=h,
            base_url=_common.api_url(base_url),
            catalog_path=catalog,
            trace_path=trace_path,
            cache_path=None if no_cache else h / "router" / "cache.sqlite",
            api_key=settings.api_key,
            cache=not no_cache,
        )
    except Exception as exc:
        err.print(f"[red]error:[/red] {getattr(exc, 'message', None) or exc}")
        raise typer.Exit(1) from None
    pipe = Pipeline(r, max_steps=max_steps, params={"max_tokens": max_tokens}, router_name=router)
    final = ""
    started = time.perf_counter()
    writing: int | None = None  # the call whose text is being printed as it arrives
    streamed: set[int | None] = set()
    steps: list[str] = []
    try:
        for ev in pipe.run(task, trace_id):
            if as_json:
                final = ev.text if ev.phase == "done" else final
                continue
            if ev.phase == "delta":
                if writing != ev.index:
                    writing = ev.index
                    streamed.add(ev.index)
                    what = steps[ev.index - 1] if ev.stage == "step" and ev.index and ev.index <= len(steps) else ""
                    out.print(f"[bold]{_stage(ev.stage, ev.index, ev.total)}[/bold] {escape(what)}".rstrip())
                    out.file.write("  ")
                out.file.write(ev.text.replace("\n", "\n  "))
                out.file.flush()
                continue
            if writing is not None:
                out.file.write("\n")
                writing = None
            res = ev.result
            if ev.phase == "done":
                final = ev.text
                continue
            if res is None:
                continue
            tag = " [green]cache[/green]" if res.cache_hit else ""
            tag += " [yellow]fallback[/yellow]" if res.fallback_used else ""
            tag += " [magenta]escalated[/magenta]" if res.decision.escalated else ""
            head = (
                f"{res.model} | {res.decision.intent} ({res.decision.confidence:.2f}) | "
                f"{res.latency_ms:.0f} ms | {res.prompt_tokens}+{res.completion_tokens} tok{tag}"
            )
            if ev.index not in streamed:  # nothing was written as it came (an empty answer)
                what = escape(ev.text) if ev.phase == "step" else ""
                out.print(f"[bold]{_stage(ev.phase, ev.index, ev.total)}[/bold] {what}")
            out.print(f"  [dim]{head}[/dim]")
            if ev.phase == "plan":
                steps = ev.text.split("\n")
                out.print(f"[bold]plan: {len(steps)} step(s)[/bold]")
                for i, s in enumerate(steps, start=1):
                    out.print(f"  {i}. {escape(s)}")
    except LokalError as exc:
        if writing is not None:
            out.file.write("\n")
        err.print(f"[red]error:[/red] {exc.message}\ntrace: {trace_path}")
        raise typer.Exit(1) from None
    finally:
        stats = r.cache.stats() if r.cache is not None else None
        cat = r.catalog
        r.close()
    total_ms = (time.perf_counter() - started) * 1000
    costs = simulate_costs(read_trace(trace_path), cat) if trace_path.is_file() else []
    mine = next((c for c in costs if c.trace_id == trace_id), None)
    if as_json:
        out.print_json(
            data={
                "task": task,
                "final": final,
                "trace": str(trace_path),
                "trace_id": trace_id,
                "latency_ms": round(total_ms, 1),
                "cost_usd": mine.cost_usd if mine else 0.0,
                "cache": {"hits": stats.hits, "misses": stats.misses} if stats else None,
            }
        )
        return
    out.rule("answer")
    out.print(final.strip())
    out.rule()
    summary = {"total_ms": round(total_ms), "trace": str(trace_path)}
    if mine:
        summary |= {
            "tokens": mine.prompt_tokens + mine.completion_tokens,
            "cost_usd": round(mine.cost_usd, 6),
        }
    if stats:
        summary |= {"cache_hits": stats.hits, "cache_misses": stats.misses}
    err.print(f"[dim]{json.dumps(summary)}[/dim]")


def _stage(stage: str, index: int | None, total: int | None) -> str:
    return f"step {index}/{total}" if stage == "step" else stage
