"""`lokal trace`: show router/pipeline traces as a table or tree, and simulate their cost."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from lokal.config import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)


def _load(path: Path) -> list[dict[str, Any]]:
    from lokal.router.trace import read_trace

    try:
        return read_trace(path)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _flags(e: dict[str, Any]) -> str:
    marks = [
        name
        for name, key in (("cache", "cache_hit"), ("fallback", "fallback_used"), ("escalated", "escalated"))
        if e.get(key)
    ]
    if e.get("error"):
        marks.append("error")
    return ",".join(marks)


def _line(e: dict[str, Any]) -> str:
    return (
        f"{e.get('model') or '-'}  intent={e.get('intent')} ({float(e.get('confidence') or 0):.2f})  "
        f"{float(e.get('latency_ms') or 0):.0f} ms  "
        f"{e.get('prompt_tokens', 0)}+{e.get('completion_tokens', 0)} tok"
        f"  ${float(e.get('cost_usd') or 0):.6f}  {_flags(e)}"
    )


def latest_trace() -> Path:
    """The most recently written trace file, or a clear error when there is none."""
    folder = get_settings().traces_dir
    found = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not found:
        err = Console(stderr=True)
        err.print(f"[red]error:[/red] no traces in {folder}; run `lokal route --trace FILE` or `lokal pipeline` first")
        raise typer.Exit(1)
    return found[-1]


@app.command("show")
def show(
    file: Annotated[
        Path | None, typer.Argument(help="A JSONL trace [the newest in LOKAL_HOME/traces].", show_default=False)
    ] = None,
    tree: Annotated[bool, typer.Option("--tree", help="Group by task: plan -> steps -> refine.")] = False,
    last: Annotated[int, typer.Option("--last", help="Only the last N events (0 = all).")] = 0,
) -> None:
    """Render a trace as a table (default) or a tree; with no FILE, the newest trace."""
    file = file or latest_trace()
    events = _load(file)
    if last:
        events = events[-last:]
    if tree:
        root = Tree(f"[bold]{file.name}[/bold] ({len(events)} events)")
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            groups[str(e.get("trace_id"))].append(e)
        for tid, evs in groups.items():
            total = sum(float(e.get("latency_ms") or 0) for e in evs)
            node = root.add(f"[bold]{tid}[/bold]  {len(evs)} calls, {total:.0f} ms")
            for e in sorted(evs, key=lambda e: (e.get("step") is None, e.get("step") or 0, e.get("ts", 0))):
                label = e.get("kind", "route") + (f" {e['step']}" if e.get("step") not in (None, 0) else "")
                leaf = node.add(f"[cyan]{label}[/cyan] {_line(e)}")
                if e.get("prompt"):
                    leaf.add(f"[dim]{str(e['prompt'])[:100]}[/dim]")
                for a in e.get("attempts") or []:
                    if a.get("error"):
                        leaf.add(f"[red]{a['model']} attempt {a['attempt']}: {a['error']}[/red]")
        out.print(root)
        return
    t = Table(title=str(file))
    for col in ("trace", "kind", "step", "intent", "conf", "model", "ms", "tokens", "cost $", "flags"):
        t.add_column(col, justify="right" if col in ("step", "conf", "ms", "tokens", "cost $") else "left")
    for e in events:
        t.add_row(
            str(e.get("trace_id", ""))[:8],
            str(e.get("kind", "")),
            "" if e.get("step") is None else str(e["step"]),
            str(e.get("intent", "")),
            f"{float(e.get('confidence') or 0):.2f}",
            str(e.get("model") or "-"),
            f"{float(e.get('latency_ms') or 0):.0f}",
            f"{e.get('prompt_tokens', 0)}+{e.get('completion_tokens', 0)}",
            f"{float(e.get('cost_usd') or 0):.6f}",
            _flags(e),
        )
    out.print(t)


@app.command("cost")
def cost(
    file: Annotated[Path, typer.Argument(help="A JSONL trace.")],
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Price with this catalog's $/1M tokens.")] = None,
) -> None:
    """Notional cost per task as routed, and what the same tokens would cost on each catalog model."""
    from lokal.router.catalog import CatalogError, RouterCatalog, load_catalog
    from lokal.router.serving import find_catalog_file
    from lokal.router.trace import simulate_costs

    events = _load(file)
    cat: RouterCatalog | None = None
    path = catalog or find_catalog_file(get_settings().home)
    if path.is_file():
        try:
            cat = load_catalog(path)
        except CatalogError as exc:
            err.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(1) from None
    tasks = simulate_costs(events, cat)
    models = sorted({m for t in tasks for m in t.what_if})
    t = Table(title=f"cost per task ({'prices from ' + str(path) if cat else 'recorded costs'})")
    for col in ("trace", "calls", "tokens", "ms", "as routed $", *[f"all on {m} $" for m in models]):
        t.add_column(col, justify="left" if col == "trace" else "right")
    for task in tasks:
        t.add_row(
            task.trace_id[:12],
            str(task.events),
            f"{task.prompt_tokens}+{task.completion_tokens}",
            f"{task.latency_ms:.0f}",
            f"{task.cost_usd:.6f}",
            *[f"{task.what_if[m]:.6f}" for m in models],
        )
    if len(tasks) > 1:
        t.add_row(
            "total",
            str(sum(x.events for x in tasks)),
            "",
            f"{sum(x.latency_ms for x in tasks):.0f}",
            f"{sum(x.cost_usd for x in tasks):.6f}",
            *[f"{sum(x.what_if[m] for x in tasks):.6f}" for m in models],
        )
    out.print(t)


@app.command("ls")
def ls(home: Annotated[Path | None, typer.Option("--home")] = None) -> None:
    """List trace files under LOKAL_HOME/traces, newest last."""
    from lokal.router.trace import iter_trace_files

    folder = (home or get_settings().home) / "traces"
    for p in iter_trace_files(folder) if folder.is_dir() else []:
        out.print(f"{p}  ({sum(1 for _ in p.open(encoding='utf-8'))} events)")
