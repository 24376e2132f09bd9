"""`lokal model info/list/download` say which engine a model runs on here and why, and download ONNX GenAI
folders with one progress bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lokal.config import get_settings
from lokal.runtime import engines
from lokal.runtime.engines import LLAMACPP_INSTALL
from tests.catalog.fileserver import FileServer
from tests.cli.test_model_cli import invoke


@pytest.fixture
def base_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp reads as not installed, as on the no-compiler base install."""
    real = engines.module_present
    monkeypatch.setattr(engines, "module_present", lambda module: module != "llama_cpp" and real(module))


def test_info_json_and_table_carry_why_on_a_base_install(home: Path, base_install: None) -> None:
    code, out = invoke("model", "info", "phi-3.5-mini", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["resolved_variant"] == "phi-3.5-mini-instruct-int4-awq-onnx-cpu:1"
    assert (info["engine"], info["engine_installed"], info["install"]) == ("onnx", True, None)
    assert (
        info["why"].startswith("cpu; engine onnx (llama-cpp-python is not installed: ")
        and LLAMACPP_INSTALL in info["why"]
    )
    assert info["path"] == str(home / "models" / "phi-3.5-mini-instruct-int4-awq-onnx-cpu" / "1" /
                               "cpu-int4-awq-block-128-acc-level-4")  # fmt: skip

    code, out = invoke("model", "info", "gemma-2-2b", "--json")  # only GGUF builds exist for it
    info = json.loads(out)
    assert code == 0 and info["engine"] == "llamacpp" and info["engine_installed"] is False
    assert info["install"].startswith(LLAMACPP_INSTALL)
    code, out = invoke("model", "info", "gemma-2-2b")
    assert code == 0 and "NOT INSTALLED" in out and "GGML_NATIVE=OFF" in out and "why" in out


def test_info_with_llama_cpp_installed_keeps_gguf(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "module_present", lambda module: True)
    code, out = invoke("model", "info", "phi-3.5-mini", "--json")
    info = json.loads(out)
    assert code == 0 and info["resolved_variant"] == "phi-3.5-mini-instruct-q4_k_m-cpu:1"
    assert info["why"] == "cpu; engine llamacpp" and info["engine_installed"] is True


def test_list_shows_the_chosen_engine(home: Path, base_install: None) -> None:
    code, out = invoke("model", "list", "--json")
    assert code == 0
    rows = {r["alias"]: r for r in json.loads(out)}
    assert (rows["qwen2.5-0.5b"]["engine"], rows["qwen2.5-0.5b"]["engine_installed"]) == ("onnx", True)
    assert (rows["qwen2.5-7b"]["engine"], rows["qwen2.5-7b"]["engine_installed"]) == ("llamacpp", False)
    code, out = invoke("model", "list")
    assert code == 0 and "Engine" in out and "llamacpp (not installed)" in out


def test_download_of_a_folder_variant(home: Path, monkeypatch: pytest.MonkeyPatch, base_install: None) -> None:
    files = {"genai_config.json": b"{}", "model.onnx": b"g" * 1000, "model.onnx.data": b"w" * 300_000}
    with FileServer() as hub:
        hub.add_hub_folder("org/tiny-onnx", "cpu-int4", files)
        monkeypatch.setenv("LOKAL_HF_ENDPOINT", hub.url)
        get_settings.cache_clear()
        home.mkdir()
        entry = {"alias": "tiny-onnx", "variants": [
            {"id": "tiny-onnx-cpu:1", "engine": "onnx", "repo": "org/tiny-onnx", "file": "cpu-int4"}]}  # fmt: skip
        (home / "catalog.yaml").write_text(yaml.safe_dump({"models": [entry]}))
        code, out = invoke("model", "download", "tiny-onnx")
        assert code == 0, out
        folder = home / "models" / "tiny-onnx-cpu" / "1" / "cpu-int4"
        assert f"downloaded tiny-onnx (tiny-onnx-cpu:1) to {folder}" in out.replace("\n", "")
        assert (folder / "model.onnx.data").read_bytes() == files["model.onnx.data"]
        assert "301.0/301.0 kB" in out  # one bar over all the folder's bytes (301 002)
        code, out = invoke("model", "download", "tiny-onnx")
        assert code == 0 and "already available" in out

    code, out = invoke("cache", "list", "--json")
    [row] = [r for r in json.loads(out) if r["state"] != "external"]  # the packaged MiniLM is listed too
    assert (row["alias"], row["variant"], row["state"], row["path"]) == ("tiny-onnx", "tiny-onnx-cpu:1", "complete",
                                                                         str(folder))  # fmt: skip
    code, out = invoke("cache", "remove", "tiny-onnx", "--yes")
    assert code == 0 and not folder.exists()
