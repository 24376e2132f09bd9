from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lokal.config import Settings
from lokal.embeddings import onnx
from lokal.embeddings.query import query_encoder
from lokal.embeddings.torch_st import get_embedder
from lokal.errors import EngineUnavailable
from lokal.router.engine import IntentEngine


def test_both_encoders_keep_the_encoder_contract(onnx_encoder: Any) -> None:
    long = "word " * 400  # past the ONNX encoder's 256-token truncation: counts must not be cut
    texts = ["Translate this menu into Italian", long]
    before = onnx_encoder.encode([long])
    for enc in (onnx_encoder, get_embedder()):
        vecs = enc.encode(texts)
        assert vecs.dtype == np.float32 and vecs.shape == (2, enc.dim) == (2, 384)
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert onnx_encoder.count_tokens(texts) == get_embedder().count_tokens(texts) > 400
    assert np.allclose(onnx_encoder.encode([long]), before, atol=1e-6)  # counting left the truncation in place


def _home_with_export(tmp_path: Path, onnx_dir: Path) -> Path:
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / onnx.ONNX_NAME).symlink_to(onnx_dir / onnx.ONNX_NAME)
    return tmp_path


def test_query_encoder_reuses_the_exported_file(onnx_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    home = _home_with_export(tmp_path, onnx_dir)
    monkeypatch.setenv("LOKAL_ROUTER_ENCODER", "onnx")
    enc = query_encoder(home, Settings())
    assert getattr(enc, "name", "") == "onnxruntime"
    eng = IntentEngine(home)
    assert eng.detect("Translate this menu into Italian", "semantic").intent == "translation"
    assert eng.encoder_name == "onnxruntime"
    assert list((home / "router").glob("examples-*.npy"))  # example embeddings cached for the next start
    monkeypatch.setenv("LOKAL_ROUTER_ENCODER", "torch")
    assert query_encoder(home, Settings()) is get_embedder()


def test_query_encoder_falls_back_to_torch_when_onnx_cannot_load(
    onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(cache_dir: Path) -> Any:
        raise EngineUnavailable("the ONNX router encoder needs onnxruntime")

    home = _home_with_export(tmp_path, onnx_dir)
    monkeypatch.setenv("LOKAL_ROUTER_ENCODER", "onnx")
    monkeypatch.setattr(onnx, "load_onnx_minilm", unavailable)
    assert query_encoder(home, Settings()) is get_embedder()
