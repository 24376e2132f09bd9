from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import ChatMessage, GenerationRequest
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.gguf.synthetic import SHAPES, ModelShape, is_synthetic, shape_for, write_gguf


def test_parameter_counts_match_the_real_models() -> None:
    # Published sizes: qwen2.5-0.5b 0.49 B, qwen2.5-7b 7.6 B, mistral-7b 7.2 B.
    assert abs(SHAPES["qwen2.5-0.5b"].parameters / 1e9 - 0.49) < 0.03
    assert abs(SHAPES["qwen2.5-7b"].parameters / 1e9 - 7.6) < 0.2
    assert abs(SHAPES["mistral-7b"].parameters / 1e9 - 7.24) < 0.1


def test_moe_and_unknown_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="mixture-of-experts"):
        shape_for("gpt-oss-20b")
    with pytest.raises(ValueError, match="no known shape"):
        shape_for("bogus")


@pytest.mark.parametrize("quant", ["q4_0", "q8_0", "f16", "f32", "q4_k_m", "q6_k"])
def test_every_quant_runs_on_the_real_engine(tmp_path: Path, quant: str) -> None:
    path = write_gguf(tmp_path / f"m-{quant}.gguf", SHAPES["tiny"], quant, like="tiny")
    assert is_synthetic(path)
    assert not (tmp_path / f"m-{quant}.gguf.part").exists()
    variant = Variant(id="m:1", path=str(path))
    engine = LlamaCppEngine()
    engine.load(ModelSpec(alias="m", context_length=512, variants=[variant]), variant, path)
    try:
        req = GenerationRequest(messages=[ChatMessage("user", "hi")], max_tokens=16, temperature=0)
        events = list(engine.generate(req, threading.Event()))
        assert events[-1].usage is not None and events[-1].usage.completion_tokens == 16
        assert events[-1].finish_reason == "length"  # EOS is masked: synthetic outputs have fixed length
        assert "".join(e.text for e in events).strip()
    finally:
        engine.unload()


def test_cancel_stops_generation(tmp_path: Path, tiny_gguf: Path) -> None:
    variant = Variant(id="m:1", path=str(tiny_gguf))
    engine = LlamaCppEngine()
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, tiny_gguf)
    cancel = threading.Event()
    events = engine.generate(GenerationRequest(prompt="x", max_tokens=1000, temperature=0), cancel)
    for n, ev in enumerate(events, start=1):
        if n == 5:
            cancel.set()
        if ev.finish_reason:
            assert ev.finish_reason == "cancelled"
            assert ev.usage is not None and ev.usage.completion_tokens < 10
    engine.unload()


def test_k_quants_come_from_llama_cpps_quantizer(tmp_path: Path) -> None:
    """q4_k_m (the catalog's default) as llama.cpp writes it: Q4_K tensors, Q6_K where its recipe wants more bits,
    the file type it names, and the synthetic marker kept through quantization."""
    import gguf

    shape = ModelShape(n_layer=2, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_vocab=320, n_ctx=512)
    path = write_gguf(tmp_path / "k.gguf", shape, "q4_k_m", like="tiny")
    reader = gguf.GGUFReader(str(path))
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert {"Q4_K", "Q6_K"} <= kinds, kinds
    assert int(reader.fields["general.file_type"].parts[-1][0]) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert is_synthetic(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.gguf"]  # the f16 intermediate is gone
