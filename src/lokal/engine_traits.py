"""What an engine is, known before it is imported: plain data importing nothing of lokal at run time, so the
catalog, the engine registry and the workers all read it without the catalog depending on the engine layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from lokal.catalog.spec import Task

# How the runtime drives an engine: "thread" = one request at a time on its own thread (ModelWorker), "batch" =
# many sequences decoded per step on one thread (BatchWorker, when loaded with several slots), "async" = many
# requests at once on the server's event loop, the engine waiting on I/O (AsyncWorker: an upstream API).
Concurrency = Literal["thread", "batch", "async"]
# What a variant's `file` names in its repo: one file (a GGUF), or a folder whose every file is downloaded.
Layout = Literal["file", "folder"]


@dataclass(frozen=True, slots=True)
class EngineTraits:
    """What an engine is, known before it is imported: the runtime picks the worker from `concurrency`, the
    catalog refuses artifact fields where `needs_artifact` is false, and cache/download only see those with it."""

    label: str  # shown to people and to Foundry clients (modelType): "GGUF", "ONNX", "Remote", ...
    concurrency: Concurrency
    tasks: frozenset[Task]
    needs_artifact: bool  # a local file or folder must be downloaded (or brought) before it loads
    layout: Layout = "file"
