from __future__ import annotations

from typing import Any

import numpy as np

from lokal.embeddings.torch_st import get_embedder


def test_onnx_vectors_match_sentence_transformers(onnx_encoder: Any) -> None:
    texts = ["Refactor this function", "Résumé de la réunion, s'il vous plaît", "x" * 3000, "a"]
    ours = onnx_encoder.encode(texts, batch_size=2)  # mixed lengths in one batch: padding must not leak in
    ref = get_embedder().encode(texts)
    assert ours.shape == ref.shape == (4, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(ours * ref, axis=1))) > 0.9999
    assert onnx_encoder.encode([]).shape == (0, 384)
