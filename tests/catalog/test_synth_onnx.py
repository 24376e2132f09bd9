"""`lokal model synth --format onnx`: a random-weight ONNX Runtime GenAI folder, registered with an onnx cpu
variant and labelled synthetic; nothing half-made is left when writing or registering fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lokal.catalog.catalog import Catalog
from lokal.catalog.spec import ModelSpec, Variant
from lokal.catalog.synth import onnx_synth_path, synthesize_onnx
from lokal.cli.main import app
from lokal.config import Settings, get_settings
from lokal.errors import InvalidRequest

pytest.importorskip("onnxruntime_genai")


def _files(settings: Settings) -> list[Path]:
    root = settings.models_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_synth_onnx_registers_a_labelled_onnx_cpu_variant(settings: Settings) -> None:
    spec = synthesize_onnx(settings, "tiny", alias="t-onnx")
    [variant] = spec.variants
    folder = onnx_synth_path(settings, "t-onnx")
    assert (variant.engine, variant.device, variant.quant, variant.path) == ("onnx", "cpu", "int4", str(folder))
    assert variant.size_bytes == sum(p.stat().st_size for p in folder.iterdir())
    assert spec.synthetic and "SYNTHETIC" in (spec.description or "")
    stored = Catalog.load(settings).get("t-onnx")
    assert stored is not None and stored.synthetic and stored.variants[0].engine == "onnx"
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["decoder"]["num_hidden_layers"] == 2 and config["model"]["vocab_size"] == 320


def test_bad_precision_or_alias_is_refused_before_writing(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="int4, fp32"):
        synthesize_onnx(settings, "tiny", "q4_0", "x")
    with pytest.raises(InvalidRequest, match="alias"):
        synthesize_onnx(settings, "tiny", "int4", "../../outside")
    assert _files(settings) == []


def test_refused_registration_removes_the_new_folder(settings: Settings) -> None:
    Catalog.load(settings).add_user_model(ModelSpec(alias="owner", variants=[Variant(id="clash-cpu:1", path="/x")]))
    with pytest.raises(InvalidRequest, match="already used"):
        synthesize_onnx(settings, "tiny", "fp32", "clash")
    assert _files(settings) == [] and not (settings.models_dir / "synthetic" / "clash").exists()


def test_cli_writes_int4_by_default_and_says_what_it_did(lokal_home: Path) -> None:
    res = CliRunner().invoke(app, ["model", "synth", "--like", "tiny", "--format", "onnx", "--alias", "cli-onnx"])
    assert res.exit_code == 0, res.output
    assert "ONNX Runtime GenAI" in res.output and "layer 2/2" in res.output and "SYNTHETIC" in res.output
    spec = Catalog.load(get_settings()).get("cli-onnx")
    assert spec is not None and spec.variants[0].quant == "int4" and spec.variants[0].engine == "onnx"
    bad = CliRunner().invoke(app, ["model", "synth", "--like", "tiny", "--format", "onnx", "--quant", "q8_0"])
    assert bad.exit_code != 0 and "int4, fp32" in bad.output
