"""The catalog's `cuda` GGUF variants on a CUDA build of llama-cpp-python: every layer offloaded.

Run with `python -m pytest -m gpu` on a machine with an NVIDIA GPU and the CUDA build (README, install paths).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import ChatMessage, GenerationRequest
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine
from lokal.runtime import engines

pytestmark = pytest.mark.gpu


def _greedy_text(engine: LlamaCppEngine, path: Path, device: str) -> str:
    variant = Variant(id=f"m-{device}:1", device=device, path=str(path), gpu_layers=-1 if device == "cuda" else None)
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, path)
    try:
        if device == "cuda":
            assert engine.info.extra["gpu_layers"] == -1  # all of them: llama.cpp's "every layer"
        req = GenerationRequest(messages=[ChatMessage("user", "count with me")], max_tokens=12, temperature=0)
        events = list(engine.generate(req, threading.Event()))
        return "".join(e.text for e in events)
    finally:
        engine.unload()


@pytest.mark.parametrize("engine_cls", [LlamaCppEngine, BatchedLlamaCppEngine])
def test_cuda_variant_offloads_every_layer_and_answers_like_the_cpu(
    tiny_gguf: Path, engine_cls: type[LlamaCppEngine]
) -> None:
    if not engines.llama_cpp_offloads():
        pytest.skip("needs llama-cpp-python built with -DGGML_CUDA=on and an NVIDIA GPU")
    gpu = _greedy_text(engine_cls(), tiny_gguf, "cuda")
    cpu = _greedy_text(engine_cls(), tiny_gguf, "cpu")
    assert gpu and gpu == cpu  # f32 weights: the greedy picks of a tiny model agree across backends
