"""`lokal model ...` and `lokal cache ...` through typer's CliRunner, on a temporary LOKAL_HOME."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import gguf
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from lokal.cli import cache as cache_cli
from lokal.cli import model as model_cli
from lokal.config import get_settings
from lokal.runtime import engines
from tests.catalog.fileserver import FileServer

runner = CliRunner()


def _root() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(model_cli.app, name="model")
    root.add_typer(cache_cli.app, name="cache")
    return root


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(_root(), list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def write_gguf(path: Path, context: int = 2048) -> Path:
    """A small but genuine GGUF (llama architecture header, Q8_0 file type, two tensors)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Test Llama")
    writer.add_context_length(context)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def user_catalog(home: Path) -> dict[str, list[dict[str, object]]]:
    data = yaml.safe_load((home / "catalog.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_list_shows_catalog_for_this_machine_and_all_variants(home: Path) -> None:
    code, out = invoke("model", "list")
    assert code == 0
    for alias in ("qwen2.5-0.5b", "gpt-oss-20b", "all-minilm-l6-v2"):
        assert alias in out
    assert "qwen2.5-0.5b-instruct-q4_k_m-cpu:1" in out and "-cuda:1" not in out
    assert "apache-2.0" in out and "embeddings" in out and "491 MB" in out
    code, out = invoke("model", "list", "--all", "--task", "chat-completion")
    assert code == 0 and "qwen2.5-0.5b-instruct-q8_0-cuda:1" in out and "all-minilm" not in out


def test_info_prints_json_with_the_resolved_variant(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_DEVICE", "cuda")
    monkeypatch.setattr(engines, "llama_cpp_offloads", lambda: True)  # a CUDA build of llama-cpp-python
    get_settings.cache_clear()
    code, out = invoke("model", "info", "qwen2.5-1.5b", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["resolved_variant"] == "qwen2.5-1.5b-instruct-q8_0-cuda:1" and info["cached"] is False
    assert info["origin"] == "builtin" and info["license"] == "apache-2.0"
    assert info["path"].startswith(str(home / "models"))


@pytest.mark.parametrize(("name", "words"), [("nope", "Known aliases"), ("../etc", "not valid")])
def test_errors_are_red_lines_with_exit_code_1(home: Path, name: str, words: str) -> None:
    code, out = invoke("model", "info", name)
    assert code == 1 and "error:" in out and words in out


def test_broken_user_catalog_is_reported_with_file_and_field(home: Path) -> None:
    home.mkdir()
    (home / "catalog.yaml").write_text("models:\n  - alias: x\n    context_length: many\n    variants: []\n")
    code, out = invoke("model", "list")
    # a warning line names file, entry and field; the bad entry is skipped and the others are listed
    assert code == 0 and "warning:" in out and "catalog.yaml" in out and "models[0].context_length" in out
    assert "qwen2.5-0.5b" in out


def test_add_reads_the_gguf_and_registers_it_without_copying(home: Path, tmp_path: Path) -> None:
    gguf_path = write_gguf(tmp_path / "my-model.gguf", context=2048)
    code, out = invoke("model", "add", str(gguf_path), "--alias", "mine", "--capabilities", "code,refactor")
    assert code == 0, out
    assert "llama architecture" in out and "Q8_0" in out and "context 2048" in out
    [entry] = user_catalog(home)["models"]
    assert entry["alias"] == "mine" and entry["capabilities"] == ["code", "refactor"]
    assert entry["context_length"] == 2048
    variants = entry["variants"]
    assert isinstance(variants, list) and len(variants) == 1
    variant = variants[0]
    assert variant["path"] == str(gguf_path) and variant["id"] == "mine-q8_0-cpu:1"
    assert not (home / "models").exists()  # no copy

    code, out = invoke("model", "list")
    assert code == 0 and "mine-q8_0-cpu:1" in out and "user" in out
    info = json.loads(invoke("model", "info", "mine", "--json")[1])
    assert info["cached"] is True and info["path"] == str(gguf_path) and info["parameters_b"] == 0.0

    # the alias is taken now: refuse, unless --force
    code, out = invoke("model", "add", str(gguf_path), "--alias", "mine")
    assert code == 1 and "--force" in out
    code, out = invoke("model", "add", str(gguf_path), "--alias", "mine", "--context", "1024", "--force")
    assert code == 0 and user_catalog(home)["models"][0]["context_length"] == 1024


def test_add_refuses_files_that_are_not_gguf(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip")
    code, out = invoke("model", "add", str(fake), "--alias", "fake")
    assert code == 1 and "not a GGUF file" in out
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(write_gguf(tmp_path / "whole.gguf").read_bytes()[:40])
    code, out = invoke("model", "add", str(truncated), "--alias", "trunc")
    assert code == 1 and "damaged GGUF" in out
    code, out = invoke("model", "add", str(tmp_path / "missing.gguf"), "--alias", "gone")
    assert code == 1 and "not a file" in out
    code, out = invoke("model", "add", str(fake), "--alias", "../evil")
    assert code == 1 and "alias" in out
    assert not (home / "catalog.yaml").exists()


def test_add_copy_then_remove_deletes_only_the_copy(home: Path, tmp_path: Path) -> None:
    original = write_gguf(tmp_path / "orig.gguf")
    code, out = invoke("model", "add", str(original), "--alias", "copied", "--copy", "--device", "cuda")
    assert code == 0, out
    variant = user_catalog(home)["models"][0]["variants"][0]  # type: ignore[index]
    copy = Path(variant["path"])
    assert copy.is_relative_to(home / "models") and copy.read_bytes() == original.read_bytes()
    assert variant["device"] == "cuda" and variant["gpu_layers"] == -1

    code, out = invoke("cache", "list")
    assert code == 0 and "copied" in out and "complete" in out

    code, out = invoke("model", "remove", "copied", "--yes")
    assert code == 0 and "removed copied" in out and "freed" in out
    assert not copy.exists() and original.exists()
    assert user_catalog(home)["models"] == []


def test_remove_user_model_leaves_the_users_file(home: Path, tmp_path: Path) -> None:
    original = write_gguf(tmp_path / "keep.gguf")
    assert invoke("model", "add", str(original), "--alias", "keep")[0] == 0
    code, out = invoke("model", "remove", "keep", "-y")
    assert code == 0 and "left" in out and "lokal did not create it" in out
    assert original.exists() and user_catalog(home)["models"] == []
    code, out = invoke("model", "remove", "keep", "-y")
    assert code == 1 and "not in the catalog" in out


def test_remove_builtin_that_is_not_cached_says_so(home: Path) -> None:
    code, out = invoke("model", "remove", "phi-4-mini")
    assert code == 0 and "nothing to remove" in out


def test_download_then_cache_list_and_remove(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(512 * 1024)
    with FileServer() as hub:
        hub.add_hub_file("org/tiny-GGUF", "tiny.gguf", data)
        monkeypatch.setenv("LOKAL_HF_ENDPOINT", hub.url)
        get_settings.cache_clear()
        home.mkdir()
        (home / "catalog.yaml").write_text(
            yaml.safe_dump(
                {
                    "models": [
                        {
                            "alias": "tiny-dl",
                            "variants": [
                                {"id": "tiny-dl-cpu:1", "repo": "org/tiny-GGUF", "file": "tiny.gguf"}
                            ],
                        }
                    ]
                }
            )
        )
        code, out = invoke("model", "download", "tiny-dl")
        assert code == 0, out
        assert "downloaded tiny-dl" in out
        final = home / "models" / "tiny-dl-cpu" / "1" / "tiny.gguf"
        assert final.read_bytes() == data
        code, out = invoke("model", "download", "tiny-dl")
        assert code == 0 and "already available" in out and len(hub.requests) == 2  # redirect + file, once

    code, out = invoke("cache", "list")
    assert code == 0 and "tiny-dl-cpu:1" in out and "524 KB" in out
    code, out = invoke("cache", "location")
    assert code == 0 and out.strip() == str(home / "models")
    code, out = invoke("cache", "remove", "tiny-dl", "--yes")
    assert code == 0 and "freed" in out and not final.exists()
    code, out = invoke("cache", "remove", "tiny-dl", "--yes")
    assert code == 0 and "nothing of tiny-dl" in out
    assert "tiny-dl" in (home / "catalog.yaml").read_text()  # cache remove keeps the catalog entry


def test_download_while_offline_suggests_bringing_a_gguf(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOKAL_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    code, out = invoke("model", "download", "qwen2.5-0.5b")
    assert code == 1 and "cannot reach" in out and "lokal model add PATH --alias NAME" in out
    assert not (
        home / "models" / "qwen2.5-0.5b-instruct-q4_k_m-cpu" / "1" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    ).exists()
