"""`lokal cache ...`: what is on disk, where, and removing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.cli import _common
from lokal.cli.model import human_size, out, readable_errors
from lokal.config import get_settings

app = typer.Typer(no_args_is_help=True, help="The local model cache.")


def _owners(catalog: Catalog, cache: Cache) -> dict[Path, tuple[str, str]]:
    """Resolved file path -> (alias, variant id) for every catalog variant with a local file."""
    owners: dict[Path, tuple[str, str]] = {}
    for spec, variant in catalog.variants():
        if variant.is_upstream:
            continue
        try:
            owners[cache.path_for(variant).resolve()] = (spec.alias, variant.id)
        except (OSError, ValueError):
            continue
    return owners


@app.command("list")
def list_cache(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file, as a list.")] = False,
) -> None:
    """Models on disk: downloads and copies under the cache, plus files you brought with `model add`."""
    rows: list[dict[str, object]] = []
    with readable_errors():
        catalog = Catalog.load(get_settings())
        cache = Cache(catalog.settings)
        owners = _owners(catalog, cache)
        table = Table(title=f"lokal cache: {cache.root}")
        for col in ("Alias", "Variant", "Size", "State", "Path"):
            table.add_column(col, overflow="fold")
        total = 0
        seen: set[Path] = set()
        for entry in cache.entries():
            resolved = entry.path.resolve()
            seen.add(resolved)
            alias, variant_id = owners.get(resolved, ("-", entry.variant_id or "-"))
            state = "complete" if entry.complete else "[yellow]partial (resumable)[/]"
            table.add_row(alias, variant_id, human_size(entry.size_bytes), state, str(entry.path))
            rows.append(
                {
                    "alias": alias,
                    "variant": variant_id,
                    "size_bytes": entry.size_bytes,
                    "state": "complete" if entry.complete else "partial",
                    "path": str(entry.path),
                }
            )
            total += entry.size_bytes
        # Files registered with `model add` (no --copy) live outside the cache but are models all the same.
        for spec, variant in catalog.variants():
            if not variant.path or variant.is_upstream:
                continue
            path = Path(variant.path)
            if path.resolve() in seen or not path.exists() or cache.is_managed(path):
                continue
            seen.add(path.resolve())
            table.add_row(spec.alias, variant.id, human_size(variant.size_bytes), "external", str(path))
            rows.append(
                {
                    "alias": spec.alias,
                    "variant": variant.id,
                    "size_bytes": variant.size_bytes,
                    "state": "external",
                    "path": str(path),
                }
            )
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        out().print(table)
        out().print(f"{human_size(total)} in {cache.root}")


@app.command("location")
def location() -> None:
    """Print the cache folder."""
    typer.echo(str(Cache(get_settings()).root))


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Alias or variant id to delete the files of.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    base_url: _common.BaseUrlOpt = None,
    host: _common.HostOpt = None,
    port: _common.PortOpt = None,
) -> None:
    """Delete cached files of a model (every variant of an alias, or one variant id), after asking and showing
    the size. Catalog entries stay; a variant loaded in the running server is unloaded first."""
    from lokal.cli import removal

    with readable_errors():
        catalog = Catalog.load(get_settings())
        spec, variant = catalog.resolve(name)
        cache = Cache(catalog.settings)
        by_alias = name.strip().lower() == spec.alias.lower()
        doomed = removal.deletable(cache, spec.variants if by_alias else [variant])
        if not doomed:
            out().print(f"nothing of {spec.alias} is in the cache at {cache.root}")
            return
        base = _common.root(base_url, host, port)
        ids = {v.id for v, _, _ in doomed}
        loaded = [i for i in removal.loaded_on(base, spec) if i in ids]
        if not yes:
            size = human_size(sum(n for _, _, n in doomed))
            note = f" It is loaded on {base} and will be unloaded first." if loaded else ""
            paths = ", ".join(str(p) for _, p, _ in doomed)
            typer.confirm(f"delete {size} of cached files of {spec.alias} ({paths})?{note}", abort=True)
        removal.unload(base, loaded)
        freed = sum(cache.remove(v) for v, _, _ in doomed)
        out().print(f"deleted cached files of {spec.alias} ({human_size(freed)} freed)")
