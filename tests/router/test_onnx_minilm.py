from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lokal.config import Settings
from lokal.embeddings import get_embedder
from lokal.router.engine import IntentEngine, default_encoder
from lokal.router.onnx_minilm import ONNX_NAME


def test_onnx_vectors_match_sentence_transformers(embedder: Any) -> None:
    texts = ["Refactor this function", "Résumé de la réunion, s'il vous plaît", "x" * 3000, "a"]
    ours = embedder.encode(texts, batch_size=2)  # mixed lengths in one batch: padding must not leak in
    ref = get_embedder().encode(texts)
    assert ours.shape == ref.shape == (4, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(ours * ref, axis=1))) > 0.9999
    assert embedder.encode([]).shape == (0, 384)


def test_default_encoder_reuses_the_exported_file(onnx_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / ONNX_NAME).symlink_to(onnx_dir / ONNX_NAME)
    monkeypatch.setenv("LOKAL_ROUTER_ENCODER", "onnx")
    enc = default_encoder(tmp_path, Settings())
    assert getattr(enc, "name", "") == "onnxruntime"
    eng = IntentEngine(tmp_path)
    assert eng.detect("Translate this menu into Italian", "semantic").intent == "translation"
    assert eng.encoder_name == "onnxruntime"
    assert list((tmp_path / "router").glob("examples-*.npy"))  # example embeddings cached for the next start
    monkeypatch.setenv("LOKAL_ROUTER_ENCODER", "torch")
    assert default_encoder(tmp_path, Settings()) is get_embedder()
