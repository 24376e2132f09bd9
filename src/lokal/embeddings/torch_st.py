"""The offline MiniLM on sentence-transformers (torch): batches for ingest and /v1/embeddings.

One process-wide instance: the router, RAG and /v1/embeddings share it instead of loading it three times.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lokal.config import library_default
from lokal.embeddings.minilm import INSTALL_HINT, MINILM_DIM, minilm_path
from lokal.errors import EngineUnavailable

if TYPE_CHECKING:
    import numpy as np


class Embedder:
    """Thread-safe wrapper; sentence-transformers models are not safe to call from two threads at once."""

    def __init__(self, path: Path | None = None, device: str = "cpu") -> None:
        library_default("HF_HUB_OFFLINE", "1")
        library_default("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EngineUnavailable(f"sentence-transformers is not installed: {INSTALL_HINT}") from exc
        self.path = path or minilm_path()
        self._model: Any = SentenceTransformer(str(self.path), device=device)
        self._lock = threading.Lock()
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of() or MINILM_DIM)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim): a dot product is the cosine similarity."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        # Under the lock too: encode() changes the shared fast tokenizer's padding/truncation state, and a count
        # running meanwhile (the router and RAG share this instance) made it fail "Unable to create tensor".
        with self._lock:
            tok = self._model.tokenizer
            return sum(len(tok.encode(t)) for t in texts)


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    return Embedder()
