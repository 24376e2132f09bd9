"""Bring your own GGUF: register a local file in the user catalog (the offline path to a real model)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lokal.catalog.cache import PART_SUFFIX, Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.durable import fsync_dir
from lokal.catalog.spec import ModelSpec, Variant, is_safe_name
from lokal.errors import InvalidRequest
from lokal.gguf.metadata import GgufInfo, read_gguf
from lokal.gguf.synthetic import is_synthetic
from lokal.hardware import Device

DEFAULT_CONTEXT = 4096


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    shutil.copyfile(src, part)
    with part.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    fsync_dir(dest.parent)


def add_local_gguf(
    catalog: Catalog,
    path: Path,
    alias: str,
    *,
    capabilities: list[str] | None = None,
    context_length: int | None = None,
    device: Device | None = None,
    copy: bool = False,
    license: str = "unknown",
    chat_template: str | None = None,
    replace: bool = False,
) -> tuple[ModelSpec, GgufInfo]:
    """Validate `path` as GGUF, then add (or with `replace`, overwrite) a user catalog entry for it.

    Without `copy` the entry points at the file where it is: lokal never moves or deletes it.
    """
    if not is_safe_name(alias) or ":" in alias:
        raise InvalidRequest(
            f"alias {alias!r} must start with a letter or digit and hold only letters, digits, '.', '_', '-'",
            param="alias",
        )
    path = path.expanduser().resolve()
    info = read_gguf(path)
    existing = catalog.get(alias)
    if existing is not None and catalog.origin(alias) == "user" and not replace:
        raise InvalidRequest(
            f"alias {alias!r} is already in your catalog; pick another alias or pass --force to replace it",
            param="alias",
        )
    device = device or catalog.devices[0]
    quant = (info.quant or "").lower()
    variant_id = f"{alias}-{quant}-{device}:1" if quant else f"{alias}-{device}:1"
    artifact = path
    if copy:
        probe = Variant(id=variant_id, file=path.name)
        artifact = Cache(catalog.settings).managed_path(probe)
        _copy_atomic(path, artifact)
    caps = [c.strip() for c in (capabilities or ["general"]) if c.strip()]
    # The file's own flag survives registration: a random-weight GGUF stays labelled wherever it is shown.
    synthetic = is_synthetic(path)
    spec = ModelSpec(
        alias=alias,
        display_name=info.name or alias,
        publisher="local",
        license=license,
        chat_template=chat_template,
        context_length=context_length or info.context_length or DEFAULT_CONTEXT,
        parameters_b=round(info.parameters / 1e9, 3) if info.parameters else None,
        capabilities=caps or ["general"],
        supports_tools="tools" in caps,
        description=("SYNTHETIC: random weights, its text is noise. " if synthetic else "")
        + f"Added by `lokal model add` from {path}"
        + (" (copied into the cache)" if copy else ""),
        synthetic=synthetic,
        variants=[
            Variant(
                id=variant_id,
                device=device,
                engine="llamacpp",
                path=str(artifact),
                size_bytes=artifact.stat().st_size,
                size_exact=True,
                quant=info.quant,
                gpu_layers=-1 if device == "cuda" else None,
            )
        ],
    )
    catalog.add_user_model(spec)
    return spec, info
