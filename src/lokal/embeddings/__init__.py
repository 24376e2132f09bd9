"""Sentence embeddings: the offline MiniLM on sentence-transformers (``torch_st``) or onnxruntime (``onnx``).

Both give the same vectors, so an index built with one is searched with the other; ``query`` decides which
one encodes single short texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class Encoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim): a dot product is the cosine similarity."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int: ...
