"""`lokal model ...`: browse the catalog, download models, bring your own GGUF, remove models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.spec import Choice, ModelSpec
from lokal.cli import _common
from lokal.config import Settings, get_settings
from lokal.errors import LokalError
from lokal.hardware import KNOWN_DEVICES, Device
from lokal.runtime.engines import engine_installed, install_hint, missing_engine_note

app = typer.Typer(no_args_is_help=True, help="Catalog, download, load and inspect models.")


def out(stderr: bool = False) -> Console:
    """Console for results; piped output gets wide lines so tables stay one row per model (grep-able)."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.width = 200
    return console


def err_out() -> Console:
    return out(stderr=True)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{size:.2f} {unit}"
        size /= 1000
    return f"{n} B"


def fail(message: str) -> NoReturn:
    err_out().print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(1)


@contextmanager
def readable_errors() -> Iterator[None]:
    """Turn lokal's errors (and file system ones) into one red line and exit code 1, never a traceback."""
    try:
        yield
    except LokalError as exc:
        fail(exc.message)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()))
    except OSError as exc:
        fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")


def _settings() -> Settings:
    return get_settings()


def load_catalog() -> Catalog:
    """The catalog, with a yellow warning line (on stderr) for each user entry that was skipped and why."""
    catalog = Catalog.load(_settings())
    for problem in catalog.problems:
        err_out().print(f"[yellow]warning:[/] {escape(str(problem))}")
    return catalog


def _notes(catalog: Catalog, spec: ModelSpec) -> str:
    notes = []
    if spec.synthetic:
        notes.append("[yellow]synthetic[/]")
    if catalog.origin(spec.alias) == "user":
        notes.append("user (overrides built-in)" if catalog.overrides_builtin(spec.alias) else "user")
    return ", ".join(notes)


@app.command("list")
def list_models(
    all_variants: Annotated[
        bool, typer.Option("--all", "-a", help="Show variants for every device, not only this machine's.")
    ] = False,
    task: Annotated[str | None, typer.Option(help="Only this task: chat-completion or embeddings.")] = None,
    cached: Annotated[bool, typer.Option("--cached", help="Only models already on disk.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row, as a list.")] = False,
) -> None:
    """List catalog models: alias, device, variant, task, size, license, cached?"""
    with readable_errors():
        catalog = load_catalog()
        cache = Cache(catalog.settings)
        rows: list[dict[str, Any]] = []
        table = Table(title=f"lokal catalog (devices: {', '.join(catalog.devices)})", show_lines=False)
        for col in ("Alias", "Device", "Variant", "Engine", "Task", "Size", "License", "Cached", "Notes"):
            table.add_column(col, overflow="fold")
        for spec in catalog.specs():
            if task and spec.task != task:
                continue
            choice = catalog.choice(spec)
            for variant in spec.variants:
                if not all_variants and variant is not choice.variant:
                    continue
                is_cached = variant.is_upstream or cache.is_cached(variant)
                if cached and not is_cached:
                    continue
                installed = engine_installed(variant.engine)
                rows.append(
                    {
                        "alias": spec.alias,
                        "device": variant.device,
                        "variant": variant.id,
                        "engine": variant.engine,
                        "engine_installed": installed,
                        "chosen": variant is choice.variant,
                        "task": spec.task,
                        "size_bytes": variant.size_bytes,
                        "license": spec.license,
                        "cached": is_cached,
                        "synthetic": spec.synthetic,
                        "origin": catalog.origin(spec.alias),
                    }
                )
                table.add_row(
                    spec.alias,
                    variant.device,
                    variant.id,
                    variant.engine if installed else f"[yellow]{variant.engine} (not installed)[/]",
                    spec.task,
                    human_size(variant.size_bytes),
                    spec.license,
                    "[green]yes[/]" if is_cached else "no",
                    _notes(catalog, spec),
                )
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        out().print(table)


def _info(catalog: Catalog, spec: ModelSpec, choice: Choice) -> dict[str, Any]:
    cache = Cache(catalog.settings)
    variant = choice.variant
    data = spec.model_dump(mode="json")
    data["origin"] = catalog.origin(spec.alias)
    data["resolved_variant"] = variant.id
    data["engine"] = variant.engine
    data["engine_installed"] = choice.installed
    data["install"] = None if choice.installed else install_hint(variant.engine)
    data["why"] = choice.why
    data["devices"] = catalog.devices
    data["cached"] = variant.is_upstream or cache.is_cached(variant)
    data["path"] = None if variant.is_upstream else str(cache.path_for(variant))
    return data


@app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="Alias or variant id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Everything the catalog knows, as JSON.")] = False,
) -> None:
    """What a model is, for a person (like `ollama show`); --json for everything, for scripts."""
    with readable_errors():
        catalog = load_catalog()
        spec, choice = catalog.resolve_choice(name)
        variant = choice.variant
        data = _info(catalog, spec, choice)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        table = Table(
            title=f"{spec.alias}" + (" [yellow](SYNTHETIC: random weights)[/]" if spec.synthetic else ""),
            show_header=False,
            box=None,
        )
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        params = f"{spec.parameters_b:g} B" if spec.parameters_b else "-"
        for key, value in (
            ("name", spec.display_name),
            ("variant", f"{variant.id} ({variant.device}, {variant.engine})"),
            ("why", choice.why),
            ("engine", variant.engine if choice.installed else f"{variant.engine}: NOT INSTALLED - {data['install']}"),
            ("task", spec.task),
            ("parameters", params),
            ("quantization", variant.quant or "-"),
            ("context length", f"{spec.context_length:,}"),
            ("size", human_size(variant.size_bytes)),
            ("capabilities", ", ".join(spec.capabilities) or "-"),
            ("license", spec.license),
            ("publisher", spec.publisher),
            ("cached", "yes" if data["cached"] else f"no (lokal model download {spec.alias})"),
            ("path", data["path"] or "-"),
            ("catalog", data["origin"]),
            ("description", spec.description or "-"),
        ):
            table.add_row(key, escape(str(value)))
        out().print(table)


@app.command("download")
def download_model(
    name: Annotated[str, typer.Argument(help="Alias or variant id.")],
    token: Annotated[
        str | None,
        typer.Option(envvar="HF_TOKEN", help="Hugging Face token (gated repos).", show_default=False),
    ] = None,
) -> None:
    """Download a model into the cache (resumes an interrupted download, verifies size and sha256)."""
    from lokal.catalog.download import fetch

    with readable_errors():
        catalog = load_catalog()
        spec, variant = catalog.resolve(name)
        cache = Cache(catalog.settings)
        if variant.is_upstream:
            out().print(f"{spec.alias} runs on a remote server ({variant.base_url}): nothing to download.")
            return
        if cache.is_cached(variant):
            out().print(f"[green]{spec.alias}[/] ({variant.id}) is already available at {cache.path_for(variant)}")
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=out(), transient=False) as bar:
                task_id = bar.add_task(variant.id, total=variant.size_bytes)
                result = fetch(
                    variant,
                    catalog.settings,
                    token=token,
                    progress=lambda done, total: bar.update(task_id, completed=done, total=total),
                    warn=lambda _note: None,  # printed below, once the bar is done
                )
        except KeyboardInterrupt:
            fail("download interrupted; run the same command again to resume")
        out().print(f"[green]downloaded[/] {spec.alias} ({variant.id}) to {result.path}")
        if not result.verified:
            err_out().print(f"[yellow]warning:[/] verified: false - {escape(result.note or 'not checked')}")
        if not engine_installed(variant.engine):
            err_out().print(f"[yellow]note:[/] it cannot load yet: {escape(missing_engine_note(variant.engine))}")


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


@app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="A GGUF file.")],
    alias: Annotated[str, typer.Option("--alias", help="Name to call it by.")],
    capabilities: Annotated[
        list[str] | None,
        typer.Option("--capabilities", help="What it is good at, e.g. code,refactor (repeatable)."),
    ] = None,
    context: Annotated[int | None, typer.Option("--context", help="Context length (default: from GGUF).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: best on this machine).")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="Copy the file into the lokal cache.")] = False,
    license: Annotated[str, typer.Option(help="License to show in `model list`.")] = "unknown",
    chat_template: Annotated[
        str | None, typer.Option(help="Template family when the GGUF has none (chatml, llama3, ...).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing user entry.")] = False,
) -> None:
    """Bring your own GGUF: register a local file under an alias (no copy unless --copy)."""
    from lokal.catalog.byo import add_local_gguf

    with readable_errors():
        chosen_device = parse_device(device)
        catalog = Catalog.load(_settings())
        spec, meta = add_local_gguf(
            catalog,
            path,
            alias,
            capabilities=_split(capabilities),
            context_length=context,
            device=chosen_device,
            copy=copy,
            license=license,
            chat_template=chat_template,
            replace=force,
        )
        variant = spec.variants[0]
        out().print(
            f"[green]added[/] {spec.alias} ({variant.id}): {meta.architecture or 'unknown'} architecture, "
            f"{variant.quant or 'unknown'} quant, context {spec.context_length}, "
            f"{human_size(variant.size_bytes)}"
        )
        out().print(f"  file: {variant.path}")
        out().print(f"  catalog: {catalog.settings.user_catalog}")
        if catalog.overrides_builtin(spec.alias):
            out().print(f"  [yellow]note:[/] this entry overrides the built-in {spec.alias}")


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Alias (or variant id).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    base_url: _common.BaseUrlOpt = None,
    host: _common.HostOpt = None,
    port: _common.PortOpt = None,
) -> None:
    """Remove a model: its user catalog entry, and the files lokal downloaded or copied for it. Asks first
    (showing the size); unloads it from the running server before anything is deleted."""
    from lokal.cli import removal

    with readable_errors():
        catalog = Catalog.load(_settings())
        spec, _ = catalog.resolve(name)
        cache = Cache(catalog.settings)
        doomed = removal.deletable(cache, spec.variants)
        kept = [
            cache.path_for(v)
            for v in spec.variants
            if v.needs_artifact and v.path and not cache.is_managed(cache.path_for(v)) and cache.path_for(v).exists()
        ]
        is_user = catalog.origin(spec.alias) == "user"
        if not doomed and not is_user:
            out().print(
                f"{spec.alias} is a built-in model with nothing in the cache: nothing to remove "
                "(built-in entries stay in the catalog)"
            )
            return
        base = _common.root(base_url, host, port)
        loaded = removal.loaded_on(base, spec)
        if not yes:
            what = []
            if is_user:
                what.append(f"its entry in {catalog.settings.user_catalog}")
            if doomed:
                size = human_size(sum(n for _, _, n in doomed))
                what.append(f"{size} of files ({', '.join(str(p) for _, p, _ in doomed)})")
            note = f" It is loaded on {base} and will be unloaded first." if loaded else ""
            typer.confirm(f"remove {spec.alias}: {' and '.join(what)}?{note}", abort=True)
        removal.unload(base, loaded)
        for variant_id in loaded:
            out().print(f"unloaded {variant_id} from {base}")
        freed = sum(cache.remove(v) for v, _, _ in doomed)
        if is_user:
            revealed = catalog.overrides_builtin(spec.alias)
            catalog.remove_user_model(spec.alias)
            out().print(f"removed {spec.alias} from {catalog.settings.user_catalog}")
            if revealed:
                out().print(f"  the built-in {spec.alias} is visible again")
        if freed:
            out().print(f"deleted cached files of {spec.alias} ({human_size(freed)} freed)")
        for path in kept:
            out().print(f"  left {path} in place: lokal did not create it")


def parse_device(value: str | None) -> Device | None:
    if value is None:
        return None
    if value not in KNOWN_DEVICES:
        fail(f"device must be one of {', '.join(KNOWN_DEVICES)}, not {value!r}")
    return cast(Device, value)
