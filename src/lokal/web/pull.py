"""Downloading a web variant: the graph its `file` names plus the JSON files transformers.js reads beside it.

Each file goes through lokal's one downloader (`lokal.catalog.download.fetch`): resume, the hub's size and
sha256 checked per file, a per-file lock, an atomic rename, cancel. The files land together in the variant's
cache folder (`<models>/<name>/<version>/`); the graph sits there under its bare name, and the file route
maps transformers.js' `onnx/<graph>` onto it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.errors import InvalidRequest

JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
Progress = Callable[[str, int, int | None], None]  # (file, bytes done, total or None)


def web_download_folder(settings: Settings, variant: Variant) -> Path:
    return settings.models_dir / variant.name / str(variant.version)


def files_of(variant: Variant) -> list[str]:
    if not (variant.repo and variant.file):
        raise InvalidRequest(f"web variant {variant.id!r} has no repo + file to download", param="model")
    root, _, _graph = variant.file.rpartition("onnx/")
    return [f"{root}{name}" for name in JSON_FILES] + [variant.file]


def pull_web(
    variant: Variant,
    settings: Settings,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Makes every file of the web variant present; returns the folder. The graph keeps the catalog's
    size/sha256; the JSON files are checked against the hub's own headers (X-Linked-Size / -Etag)."""
    from lokal.catalog.download import fetch

    folder = web_download_folder(settings, variant)
    for rel in files_of(variant):
        graph = rel == variant.file
        part = variant.model_copy(
            update={
                "file": rel,
                "sha256": variant.sha256 if graph else None,
                "size_bytes": variant.size_bytes if graph else None,
                "size_exact": variant.size_exact if graph else False,
            }
        )
        if progress is not None:
            name = rel

            def report(done: int, total: int | None, name: str = name) -> None:
                progress(name, done, total)

            fetch(part, settings, progress=report, cancel=cancel)
        else:
            fetch(part, settings, cancel=cancel)
    return folder
