"""`foundry cache cd PATH`: keep models elsewhere. lokal always looks in LOKAL_HOME/models, so that folder
becomes a symbolic link to PATH; every cache check resolves paths, so files under the link count as lokal's."""

from __future__ import annotations

import contextlib
from pathlib import Path


class CacheDirError(RuntimeError):
    """The cache cannot be pointed there; the message says why and what to do instead."""


def point_cache_at(models_dir: Path, path: Path) -> Path:
    """Make `models_dir` lead to `path` (created if missing); returns the resolved target."""
    target = path.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise CacheDirError(f"{target} is a file, not a folder")
    if models_dir.is_symlink():
        if models_dir.resolve() == target:
            return target
    elif models_dir.exists():
        if models_dir.resolve() == target:
            return target
        if any(models_dir.iterdir()):
            # Moving gigabytes silently is not what `cd` means; leaving them unreachable is worse.
            raise CacheDirError(
                f"{models_dir} holds models; move them into {target} first (or remove them with "
                "`foundry cache remove`), then run this again"
            )
    if target.is_relative_to(models_dir.resolve()) and not models_dir.is_symlink():
        raise CacheDirError(f"{target} is inside {models_dir} itself")
    try:
        target.mkdir(parents=True, exist_ok=True)
        if models_dir.is_symlink():
            models_dir.unlink()
        elif models_dir.exists():
            models_dir.rmdir()  # empty, checked above
        models_dir.parent.mkdir(parents=True, exist_ok=True)
        models_dir.symlink_to(target, target_is_directory=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            models_dir.mkdir(parents=True, exist_ok=True)  # never leave lokal without a cache folder
        raise CacheDirError(f"cannot point {models_dir} at {target}: {exc.strerror or exc}") from None
    return target
