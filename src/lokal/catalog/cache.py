"""Where downloaded models live: LOKAL_HOME/models/<variant name>/<version>/<filename>.

A file only appears at its final path once complete and verified (download.py renames `<file>.part`), so
"the final path exists" is the whole definition of cached. A folder variant (ONNX GenAI: `file` names a folder
of the repo) fills `<folder>.part/` file by file, writes its manifest (MANIFEST: every file, size, sha256) last
and then renames the folder: it is cached when the folder holds that manifest. Variants with `path` set
(brought by the user, synthetic, or shipped in a package) are cached exactly when that path exists. Only
artifact variants have a place here: an upstream (engine: remote) handed to the cache is a caller's bug and
raises, rather than reading as "cached" or "nothing to remove".
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lokal.catalog.spec import Variant
from lokal.config import Settings, get_settings
from lokal.errors import InvalidRequest

PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
MANIFEST = ".lokal-manifest.json"  # in a downloaded folder, written once every file in it is verified


@dataclass(frozen=True, slots=True)
class CacheEntry:
    variant_id: str | None  # "<variant name>:<version>" for downloads; None for files laid out otherwise
    path: Path
    size_bytes: int
    complete: bool  # False: an interrupted download (`.part`) that the next download resumes


def _safe_segment(segment: str, what: str) -> str:
    if segment in ("", ".", "..") or any(c in segment for c in "/\\\x00"):
        raise InvalidRequest(f"{what} {segment!r} cannot be used as a cache path segment")
    return segment


def _artifact(variant: Variant) -> Variant:
    if not variant.needs_artifact:
        raise InvalidRequest(f"variant {variant.id!r} is served by an upstream API and has no local file")
    return variant


def tree_size(path: Path) -> int:
    """Bytes under `path` without following symlinks (a link out of the cache must not count)."""
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


class Cache:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    @property
    def root(self) -> Path:
        return self.settings.models_dir

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root.resolve())

    def managed_path(self, variant: Variant) -> Path:
        """The cache location for a downloadable variant, checked to stay inside models_dir."""
        _artifact(variant)
        name = _safe_segment(variant.name, "variant name")
        filename = _safe_segment(variant.filename, "file name")
        path = self.root / name / str(variant.version) / filename
        if not self._inside(path):
            raise InvalidRequest(f"variant {variant.id!r} would be stored outside {self.root}")
        return path

    def path_for(self, variant: Variant) -> Path:
        _artifact(variant)
        if variant.path:
            return Path(variant.path).expanduser()
        return self.managed_path(variant)

    def partial_path(self, variant: Variant) -> Path:
        final = self.managed_path(variant)
        return final.with_name(final.name + PART_SUFFIX)

    def locate(self, variant: Variant) -> Path | None:
        """The variant's artifact once it is complete; None when it is not here (or is an upstream's: none)."""
        if variant.is_upstream:
            return None
        # is_cached, not exists(): a folder download counts only once every file is in (its manifest is last)
        return self.path_for(variant) if self.is_cached(variant) else None

    def is_cached(self, variant: Variant) -> bool:
        path = self.path_for(variant)
        if variant.is_folder and not variant.path:
            return (path / MANIFEST).is_file()
        return path.exists()

    def is_managed(self, path: Path) -> bool:
        """True when lokal created `path` inside its cache (so removing it is lokal's business)."""
        return path.exists() and self._inside(path)

    def entries(self) -> list[CacheEntry]:
        """Every model file (and interrupted download) under models_dir, largest first.

        Downloads sit at <name>/<version>/<file>; other tools (synthetic models, `model add --copy`) may
        use other depths, so the walk takes every file and names a variant id only where the layout says so.
        """
        found: list[CacheEntry] = []
        if not self.root.is_dir():
            return found

        def add(final: Path, size: int, complete: bool) -> None:
            parts = final.relative_to(self.root).parts
            variant_id = f"{parts[0]}:{parts[1]}" if len(parts) == 3 and parts[1].isdigit() else None
            found.append(CacheEntry(variant_id, final, size, complete))

        for dirpath, dirnames, filenames in os.walk(self.root):  # os.walk does not follow symlinks
            here = Path(dirpath)
            if here != self.root and (MANIFEST in filenames or here.name.endswith(PART_SUFFIX)):
                # A downloaded folder is one entry (complete), its `.part` staging folder another (resumable).
                complete = not here.name.endswith(PART_SUFFIX)
                final = here if complete else here.with_name(here.name.removesuffix(PART_SUFFIX))
                add(final, tree_size(here), complete)
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                item = here / name
                if item.is_symlink() or name.startswith(".") or name.endswith(LOCK_SUFFIX):
                    continue
                complete = not name.endswith(PART_SUFFIX)
                final = item if complete else item.with_name(name.removesuffix(PART_SUFFIX))
                add(final, item.stat().st_size, complete)
        found.sort(key=lambda e: e.size_bytes, reverse=True)
        return found

    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries())

    def remove(self, variant: Variant) -> int:
        """Delete the variant's files (complete or partial) from the cache; returns the bytes freed.

        A variant whose `path` lies outside models_dir belongs to the user: refuse rather than delete it.
        """
        _artifact(variant)
        if variant.path:
            path = Path(variant.path).expanduser()
            if not path.exists():
                return 0
            if not self._inside(path) or path.is_symlink():
                raise InvalidRequest(f"{path} was not created by lokal; delete it yourself if you mean to")
            freed = tree_size(path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            self._prune(path.parent)
            return freed
        version_dir = self.managed_path(variant).parent
        if not version_dir.exists():
            return 0
        freed = tree_size(version_dir)
        shutil.rmtree(version_dir)
        self._prune(version_dir.parent)
        return freed

    def _prune(self, directory: Path) -> None:
        # Drop emptied <name>/<version> folders, never models_dir itself.
        root = self.root.resolve()
        while directory.resolve() != root and self._inside(directory):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
