"""`lokal cache ...`: what is on disk, where, and removing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.cli.model import human_size, out, readable_errors
from lokal.config import get_settings

app = typer.Typer(no_args_is_help=True, help="The local model cache.")


def _owners(catalog: Catalog, cache: Cache) -> dict[Path, tuple[str, str]]:
    """Resolved file path -> (alias, variant id) for every catalog variant with a local file."""
    owners: dict[Path, tuple[str, str]] = {}
    for spec, variant in catalog.variants():
        if variant.engine == "remote":
            continue
        try:
            owners[cache.path_for(variant).resolve()] = (spec.alias, variant.id)
        except (OSError, ValueError):
            continue
    return owners


@app.command("list")
def list_cache() -> None:
    """Models on disk: downloads and copies under the cache, plus files you brought with `model add`."""
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
            total += entry.size_bytes
        # Files registered with `model add` (no --copy) live outside the cache but are models all the same.
        for spec, variant in catalog.variants():
            if not variant.path or variant.engine == "remote":
                continue
            path = Path(variant.path)
            if path.resolve() in seen or not path.exists() or cache.is_managed(path):
                continue
            seen.add(path.resolve())
            table.add_row(spec.alias, variant.id, human_size(variant.size_bytes), "external", str(path))
        out().print(table)
        out().print(f"{human_size(total)} in {cache.root}")


@app.command("location")
def location() -> None:
    """Print the cache folder."""
    typer.echo(str(Cache(get_settings()).root))


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="Alias or variant id to delete the files of.")]) -> None:
    """Delete cached files of a model (every variant of an alias, or one variant id). Catalog entries stay."""
    with readable_errors():
        catalog = Catalog.load(get_settings())
        spec, variant = catalog.resolve(name)
        cache = Cache(catalog.settings)
        by_alias = name.strip().lower() == spec.alias.lower()
        targets = spec.variants if by_alias else [variant]
        freed = 0
        for target in targets:
            if target.engine == "remote":
                continue
            if target.path and not cache.is_managed(cache.path_for(target)):
                continue  # a file the user brought: not the cache's to delete
            freed += cache.remove(target)
        if freed:
            out().print(f"deleted cached files of {spec.alias} ({human_size(freed)} freed)")
        else:
            out().print(f"nothing of {spec.alias} is in the cache at {cache.root}")
