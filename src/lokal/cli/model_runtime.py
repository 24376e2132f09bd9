"""`lokal model synth|load|unload|ps`: the runtime side of `lokal model` (talks to a running server)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lokal.cli import _common, ps_rows
from lokal.cli._common import BaseUrlOpt, HostOpt, PortOpt
from lokal.cli.model import app, err_out, fail, human_size, out, readable_errors
from lokal.config import get_settings


@app.command("synth")
def synth(
    like: Annotated[str, typer.Option(help="Real model whose shape to copy, e.g. qwen2.5-0.5b.")],
    quant: Annotated[
        str | None,
        typer.Option(
            help="GGUF: f32, f16, q8_0 (the default), q4_0, or a llama.cpp quantization quantized by llama.cpp "
            "itself: q4_k_m (the catalog's default), q4_k_s, q5_k_m, q5_k_s, q6_k, q3_k_m, q2_k, q4_1, q5_0, q5_1. "
            "With --format onnx: int4 (the default) or fp32. With --format web: fp32 (the default) or q4."
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="gguf (served by lokal with llama.cpp), onnx (an ONNX Runtime GenAI folder, served by lokal, "
            "no torch needed) or web (ONNX in transformers.js's layout, run in the playground's page).",
        ),
    ] = "gguf",
    alias: Annotated[str | None, typer.Option(help="Alias to register (default <like>-synthetic-<quant>).")] = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option("--capabilities", help="What the router may send it, e.g. chat,code (repeatable)."),
    ] = None,
) -> None:
    """Write a random-weight model with the exact shape of a real one, and register it (labelled SYNTHETIC)."""
    from lokal.catalog.synth import synthesize
    from lokal.gguf.synthetic import shape_for

    with readable_errors():
        try:
            shape = shape_for(like)
        except ValueError as exc:
            fail(str(exc))
        caps = [c.strip() for v in capabilities or [] for c in v.split(",") if c.strip()] or None
        if fmt == "web":
            _synth_web(like, quant or "fp32", alias, caps)
            return
        if fmt == "onnx":
            _synth_onnx(like, quant or "int4", alias, caps)
            return
        if fmt != "gguf":
            fail(f"--format must be gguf, onnx or web, not {fmt!r}")
        quant = quant or "q8_0"
        console = err_out()
        console.print(f"writing a [yellow]synthetic[/] {like}-shaped model ({_shape_line(like)}), {quant}")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("layers", total=shape.n_layer + 2)
            spec = synthesize(
                get_settings(),
                like,
                quant,
                alias,
                capabilities=caps,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        size = spec.variants[0].size_bytes
        out().print(f"[green]registered[/] [bold]{spec.alias}[/] ({human_size(size)}): {spec.description}")
        out().print(f"serve it: lokal serve --model {spec.alias}   |   its text is noise")


def _shape_line(like: str) -> str:
    from lokal.gguf.synthetic import shape_for

    shape = shape_for(like)
    return (
        f"{shape.parameters / 1e9:.2f} B parameters, {shape.n_layer} layers, {shape.n_embd} wide, "
        f"{shape.n_head}/{shape.n_head_kv} heads, vocab {shape.n_vocab}"
    )


def _synth_onnx(like: str, precision: str, alias: str | None, capabilities: list[str] | None) -> None:
    import time

    from lokal.catalog.synth import synthesize_onnx

    console = err_out()
    console.print(
        f"writing a [yellow]synthetic[/] {like}-shaped ONNX Runtime GenAI model ({_shape_line(like)}), {precision}"
    )
    t0 = time.perf_counter()
    spec = synthesize_onnx(
        get_settings(),
        like,
        precision,
        alias,
        capabilities=capabilities,
        progress=lambda step: console.print(f"  {step}"),
    )
    size = spec.variants[0].size_bytes
    out().print(
        f"[green]registered[/] [bold]{spec.alias}[/] ({human_size(size)}, engine onnx, "
        f"{time.perf_counter() - t0:.1f}s): {spec.description}"
    )
    out().print(f"serve it: lokal serve --model {spec.alias}   |   its text is noise")


def _synth_web(like: str, dtype: str, alias: str | None, capabilities: list[str] | None) -> None:
    from lokal.catalog.synth import synthesize_web
    from lokal.gguf.synthetic import shape_for

    shape = shape_for(like)
    console = err_out()
    console.print(
        f"writing a [yellow]synthetic[/] {like}-shaped web model ({shape.parameters / 1e9:.2f} B parameters), "
        f"{dtype}, in transformers.js's layout"
    )
    spec = synthesize_web(
        get_settings(), like, dtype, alias, capabilities=capabilities, progress=lambda step: console.print(f"  {step}")
    )
    size = spec.variants[0].size_bytes
    out().print(f"[green]registered[/] [bold]{spec.alias}[/] ({human_size(size)}, device webgpu): {spec.description}")
    out().print(
        f"run it in the browser: lokal serve, then open /?engine=browser&model={spec.alias}   |   its text is noise"
    )


@app.command("load")
def load(
    name: Annotated[str, typer.Argument(help="Alias or variant id.")],
    ttl: Annotated[float | None, typer.Option(help="Idle seconds before unload.")] = None,
    base_url: BaseUrlOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Load a model into the running server."""
    base = _common.root(base_url, host, port)
    data = _common.call(base, "POST", f"/lokal/models/{quote(name, safe='')}/load", ttl=ttl)
    synthetic = _common.is_synthetic(base, str(data["alias"]))
    note = " [yellow](SYNTHETIC: random weights, its text is noise)[/]" if synthetic else ""
    out().print(f"loaded [bold]{data['alias']}[/] ({data['id']}) on {base} in {data['load_seconds']:.2f}s{note}")


@app.command("unload")
def unload(
    name: Annotated[str, typer.Argument(help="Alias or variant id.")],
    force: Annotated[bool, typer.Option(help="Unload even with requests in flight.")] = False,
    base_url: BaseUrlOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Unload a model from the running server."""
    base = _common.root(base_url, host, port)
    data = _common.call(base, "POST", f"/lokal/models/{quote(name, safe='')}/unload", force=str(force).lower())
    out().print(f"unloaded {name} from {base}" if data["unloaded"] else f"{name} was not loaded on {base}")


@app.command("ps")
def ps(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    base_url: BaseUrlOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Models loaded in the running server: memory, TTL left, queue."""
    base = _common.root(base_url, host, port)
    data = _common.call(base, "GET", "/lokal/ps")
    if as_json:
        import json

        out().print_json(json.dumps(data))
        return
    rss = ps_rows.number(data.get("server_rss_bytes") if isinstance(data, dict) else None)
    table = Table(title=f"loaded models on {base} (server RSS {human_size(None if rss is None else int(rss))})")
    for col in ("alias", "id", "engine", "memory", "load s", "TTL left s", "queue", "slots busy"):
        table.add_column(col)
    rows = ps_rows.models(data)
    for m in rows:
        slots = f"{ps_rows.fmt(m.get('slots_busy'))}/{ps_rows.fmt(m.get('slots'))}" if "slots" in m else "-"
        alias = escape(ps_rows.text(m.get("alias"))) + (" [yellow](synthetic)[/]" if m.get("synthetic") else "")
        memory = ps_rows.number(m.get("memory_bytes"))
        table.add_row(
            alias,
            escape(ps_rows.text(m.get("id"))),
            escape(ps_rows.text(m.get("engine"))),
            human_size(None if memory is None else int(memory)),
            ps_rows.fmt(m.get("load_seconds"), ".2f"),
            ps_rows.fmt(m.get("ttl_left")),
            ps_rows.fmt(m.get("queue_depth")),
            slots,
        )
    out().print(table if rows else f"no models loaded on {base}")
    for m in rows:  # how an engine runs concurrent requests, where it is not plain continuous batching
        note = m.get("batching_note")
        if isinstance(note, str) and note:
            out().print(f"[dim]{escape(ps_rows.text(m.get('alias')))}: {escape(note)}[/]")
    replicas = [cells for m in rows for cells in ps_rows.replica_cells(m)]
    if replicas:  # remote models: each upstream replica of their pools
        pool = Table(title="upstream replicas")
        for col in ps_rows.REPLICA_COLUMNS:
            pool.add_column(col)
        for cells in replicas:
            pool.add_row(*(escape(c) for c in cells))
        out().print(pool)
