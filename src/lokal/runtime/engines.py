"""Which engine class serves a catalog variant. Heavy runtimes are imported only when a model needs them."""

from __future__ import annotations

from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.engines.base import Engine


def make_engine(variant: Variant, settings: Settings) -> Engine:
    if variant.engine == "llamacpp":
        from lokal.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(n_threads=settings.n_threads)
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
