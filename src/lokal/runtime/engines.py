"""Which engine class serves a catalog variant. Heavy runtimes are imported only when a model needs them."""

from __future__ import annotations

from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.engines.base import Engine


def make_engine(variant: Variant, settings: Settings, *, parallel: int | None = None) -> Engine:
    """`parallel` overrides LOKAL_PARALLEL (1 = one request at a time, as `lokal run` in-process wants)."""
    if variant.engine == "llamacpp":
        from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine

        return BatchedLlamaCppEngine(
            n_threads=settings.n_threads,
            parallel=parallel or settings.parallel,
            memory_budget_bytes=settings.memory_budget_mb * 2**20,
        )
    if variant.engine == "remote":
        from lokal.engines.remote import RemoteEngine

        return RemoteEngine()
    if variant.engine == "onnx":
        from lokal.engines.ortgenai import OrtGenAIEngine

        return OrtGenAIEngine(n_threads=settings.n_threads)
    if variant.engine == "sentence-transformers":
        from lokal.engines.sentence import SentenceEngine

        return SentenceEngine()
    raise ValueError(f"unknown engine {variant.engine!r}")
