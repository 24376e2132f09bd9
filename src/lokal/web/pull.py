"""Downloading a web variant: the graph its `file` names plus the JSON files transformers.js reads beside it.

Each file goes through lokal's one multi-file loop (`lokal.catalog.download.fetch_parts`, which ONNX GenAI
folders use too) and its one-file downloader: resume, the hub's size and sha256 checked per file, a per-file
lock, an atomic rename, cancel, progress over all the files. The files land together in the variant's
cache folder (`<models>/<name>/<version>/`); the graph sits there under its bare name, and the file route
maps transformers.js' `onnx/<graph>` onto it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.errors import InvalidRequest

if TYPE_CHECKING:  # the downloader (httpx) is imported only when a pull runs
    from lokal.catalog.download import Progress

JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


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
    size/sha256; the JSON files are checked against the hub's own headers (X-Linked-Size / -Etag).
    `progress` hears the bytes of all the files together."""
    from lokal.catalog.download import FetchOptions, Part, fetch_parts

    folder = web_download_folder(settings, variant)
    parts = []
    for rel in files_of(variant):
        graph = rel == variant.file
        one = variant.model_copy(
            update={
                "file": rel,
                "sha256": variant.sha256 if graph else None,
                "size_bytes": variant.size_bytes if graph else None,
                "size_exact": variant.size_exact if graph else False,
            }
        )
        parts.append(Part(one, folder / one.filename, f"{variant.id}: file {rel}"))
    fetch_parts(parts, settings, FetchOptions(progress=progress, cancel=cancel))
    return folder
