"""Sentence-transformers embeddings (the offline all-MiniLM-L6-v2) as an engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from lokal.catalog.spec import ModelSpec, Variant
from lokal.embeddings.minilm import minilm_path
from lokal.embeddings.torch_st import Embedder, get_embedder
from lokal.engines.base import EngineInfo, GenerationEvent, GenerationRequest
from lokal.errors import EngineError, InvalidRequest


class SentenceEngine:
    def __init__(self) -> None:
        self.info = EngineInfo()
        self._embedder: Embedder | None = None
        self._alias = "embeddings"

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        t0 = time.perf_counter()
        self._alias = spec.alias
        # The packaged MiniLM is shared with the router and RAG in this process rather than loaded twice.
        same = path is None or path.resolve() == minilm_path().resolve()
        self._embedder = get_embedder() if same else Embedder(path)
        size = sum(p.stat().st_size for p in self._embedder.path.rglob("*") if p.is_file())
        self.info = EngineInfo(
            memory_bytes=size,
            load_seconds=time.perf_counter() - t0,
            context_length=spec.context_length,
            extra={"dimensions": self._embedder.dim},
        )

    def count_tokens(self, req: GenerationRequest) -> int:
        raise InvalidRequest(f"{self._alias} is an embeddings model; use /v1/embeddings", param="model")

    def count_text_tokens(self, texts: Sequence[str]) -> int:
        if self._embedder is None:
            raise EngineError("model is not loaded")
        return self._embedder.count_tokens(texts)

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        raise InvalidRequest(f"{self._alias} is an embeddings model; use /v1/embeddings", param="model")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._embedder is None:
            raise EngineError("model is not loaded")
        vectors: list[list[float]] = self._embedder.encode(texts).tolist()
        return vectors

    def unload(self) -> None:
        self._embedder = None
