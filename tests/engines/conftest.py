"""The tiny ONNX GenAI model, built once a session (~10 s): the engine's, sampling's and serving's tests read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engines.onnx_model import build_tiny_onnx


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: a test that changes a model copies it first (see test_ortgenai's _without_template)."""
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("onnx_ir", reason="the model builder needs onnx-ir")
    return build_tiny_onnx(tmp_path_factory.mktemp("onnx-model"))
