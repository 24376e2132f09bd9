"""What `model remove` and `cache remove` share: the bytes a removal frees (shown before asking), and a
model loaded in the running server unloaded first, so a removed model is never left loaded and, with its
catalog entry gone, impossible to unload."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from lokal.catalog.cache import Cache, tree_size
from lokal.catalog.spec import ModelSpec, Variant
from lokal.cli import _common, ps_rows


def deletable(cache: Cache, variants: list[Variant]) -> list[tuple[Variant, Path, int]]:
    """(variant, path, bytes) for each variant whose files lokal created and would delete."""
    found: list[tuple[Variant, Path, int]] = []
    for variant in variants:
        if variant.is_upstream:
            continue
        path = cache.path_for(variant)
        # Downloads go with their <version> folder (an interrupted .part and sidecar files too).
        where = path if variant.path else path.parent
        if not cache.is_managed(where) or where.is_symlink():
            continue  # a file the user brought (or nothing there): not lokal's to delete
        found.append((variant, where, tree_size(where)))
    return found


def loaded_on(base: str, spec: ModelSpec) -> list[str]:
    """Variant ids of `spec` the server at `base` has loaded; [] when no server answers there."""
    if not _common.is_up(base):
        return []
    rows = ps_rows.models(_common.json_or_none(base, "GET", "/lokal/ps"))
    ids = {v.id.lower() for v in spec.variants}
    return [str(m["id"]) for m in rows if str(m.get("id", "")).lower() in ids]


def unload(base: str, variant_ids: list[str]) -> None:
    """Unload each (exit 1 with the server's reason, e.g. requests in flight, before anything is deleted)."""
    for variant_id in variant_ids:
        _common.call(base, "POST", f"/lokal/models/{quote(variant_id, safe='')}/unload", force="false")
