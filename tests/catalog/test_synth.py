"""`lokal model synth` leaves nothing half-made behind: an interrupt, an error or a refused registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lokal.catalog.catalog import Catalog
from lokal.catalog.spec import ModelSpec, Variant
from lokal.catalog.synth import synthesize
from lokal.config import Settings
from lokal.errors import InvalidRequest
from lokal.gguf.synthetic import SHAPES, write_gguf


def _files(settings: Settings) -> list[Path]:
    root = settings.models_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def ctrl_c_after_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C once the tensors are on disk but before the rename: a full-size `.part` exists at that moment."""
    import gguf

    write = gguf.GGUFWriter.write_tensors_to_file

    def then_interrupt(self: gguf.GGUFWriter, *args: object, **kwargs: object) -> None:
        write(self, *args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", then_interrupt)


@pytest.mark.usefixtures("ctrl_c_after_tensors")
def test_interrupted_writer_removes_its_part(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        write_gguf(tmp_path / "m.gguf", SHAPES["tiny"], "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_writer_failing_while_writing_the_file_removes_its_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    def full_disk(self: object, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_gguf(tmp_path / "m.gguf", SHAPES["tiny"], "f16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("ctrl_c_after_tensors")
def test_interrupted_synth_leaves_no_files_and_no_entry(settings: Settings) -> None:
    with pytest.raises(KeyboardInterrupt):
        synthesize(settings, "tiny", "q8_0", "half")
    assert _files(settings) == [] and Catalog.load(settings).get("half") is None


def test_synth_whose_registration_is_refused_removes_the_new_file(settings: Settings) -> None:
    # Another alias already owns the variant id synth would register ("clash-cpu:1").
    owner = ModelSpec(alias="owner", variants=[Variant(id="clash-cpu:1", path="/elsewhere.gguf")])
    Catalog.load(settings).add_user_model(owner)
    with pytest.raises(InvalidRequest, match="already used"):
        synthesize(settings, "tiny", "q8_0", "clash")
    assert _files(settings) == [] and not (settings.models_dir / "synthetic" / "clash").exists()


def test_bad_quant_or_alias_is_refused_before_writing(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="quant"):
        synthesize(settings, "tiny", "q3_x", "x")
    with pytest.raises(InvalidRequest, match="alias"):
        synthesize(settings, "tiny", "q8_0", "../../outside")
    assert _files(settings) == [] and not (settings.home / "outside").exists()


def test_successful_synth_leaves_only_the_model(settings: Settings) -> None:
    spec = synthesize(settings, "tiny", "q8_0", "whole")
    [path] = _files(settings)
    assert path.suffix == ".gguf" and spec.variants[0].path == str(path)


def test_a_qwen_style_shape_carries_qkv_biases_that_llama_cpp_loads(tmp_path: Path) -> None:
    """The qwen2 branch of the writer on a tiny shape (the real 0.5B shape is the slow check in tests/cli)."""
    import dataclasses

    import gguf
    from llama_cpp import Llama

    shape = dataclasses.replace(SHAPES["tiny"], qkv_bias=True, rope_theta=1e6)
    path = write_gguf(tmp_path / "qwenish.gguf", shape, "q8_0", like="qwen2.5-0.5b")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert {f"blk.{i}.attn_{x}.bias" for i in range(shape.n_layer) for x in "qkv"} <= names
    llm = Llama(str(path), n_ctx=64, verbose=False)
    try:
        out: Any = llm.create_completion("hi", max_tokens=3, temperature=0)
        assert 1 <= out["usage"]["completion_tokens"] <= 3  # it loads and decodes with the biases
        assert llm.n_vocab() == shape.n_vocab
    finally:
        llm.close()
