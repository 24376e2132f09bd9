"""The engine registry: each catalog `engine:` name, what that engine is (its traits), and how to make one.

Heavy runtimes are imported only when a model needs them: the traits are plain data, read by the catalog
(which fields a variant may have), the cache (which variants have files) and the runtime (which worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lokal.engines.base import Engine, EngineTraits

if TYPE_CHECKING:
    from lokal.catalog.spec import Task, Variant
    from lokal.config import Settings

Factory = Callable[["Settings", "int | None"], Engine]  # (settings, parallel override) -> an unloaded engine


@dataclass(frozen=True, slots=True)
class EngineEntry:
    traits: EngineTraits
    make: Factory


def _llamacpp(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine

    return BatchedLlamaCppEngine(
        n_threads=settings.n_threads,
        parallel=parallel or settings.parallel,
        memory_budget_bytes=settings.memory_budget_mb * 2**20,
    )


def _onnx(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.ortgenai import OrtGenAIEngine

    return OrtGenAIEngine(n_threads=settings.n_threads)


def _sentence(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.sentence import SentenceEngine

    return SentenceEngine()


def _remote(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.remote import RemoteEngine

    return RemoteEngine()


def _web(settings: Settings, parallel: int | None) -> Engine:
    from lokal.errors import EngineUnavailable

    raise EngineUnavailable(
        "this variant runs in the browser: open the playground (lokal serve, then /?engine=browser) and pick it "
        "under 'Runs on: this browser'"
    )


CHAT: frozenset[Task] = frozenset({"chat-completion"})
EMBEDDINGS: frozenset[Task] = frozenset({"embeddings"})

ENGINES: dict[str, EngineEntry] = {
    # Batches when loaded with several slots; embeddings only on an unbatched (parallel=1) embedding GGUF.
    "llamacpp": EngineEntry(EngineTraits("GGUF", "batch", CHAT | EMBEDDINGS, needs_artifact=True), _llamacpp),
    "onnx": EngineEntry(EngineTraits("ONNX", "thread", CHAT, needs_artifact=True), _onnx),
    "sentence-transformers": EngineEntry(
        EngineTraits("SentenceTransformers", "thread", EMBEDDINGS, needs_artifact=True), _sentence
    ),
    "remote": EngineEntry(EngineTraits("Remote", "async", CHAT | EMBEDDINGS, needs_artifact=False), _remote),
    # transformers.js in the playground's page (lokal.web): lokal only serves the files, it never loads one.
    "web": EngineEntry(EngineTraits("Web", "thread", CHAT | EMBEDDINGS, needs_artifact=True), _web),
}


def traits_of(engine: str) -> EngineTraits:
    entry = ENGINES.get(engine)
    if entry is None:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return entry.traits


def make_engine(variant: Variant, settings: Settings, *, parallel: int | None = None) -> Engine:
    """`parallel` overrides LOKAL_PARALLEL (1 = one request at a time, as `lokal run` in-process wants)."""
    entry = ENGINES.get(variant.engine)
    if entry is None:
        raise ValueError(f"unknown engine {variant.engine!r}")
    return entry.make(settings, parallel)
