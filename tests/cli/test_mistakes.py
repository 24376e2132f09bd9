"""Mistakes leave nothing behind: each one is a clear error or a question, and no state changes.

`serve --model` with a name the catalog does not know, `rag ingest` of a path that is not there, `model
remove` / `cache remove` answered "no", and `model remove` of a model the running server has loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from lokal.cli.main import app
from lokal.config import get_settings
from tests.support.models import standard_entries, write_catalog
from tests.support.server import LokalServer, free_port

runner = CliRunner()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _serve(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOKAL_HOME": str(home), "LOKAL_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lokal", "serve", "--port", str(free_port()), "--no-pull", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_serve_unknown_model_fails_with_close_matches_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = _serve(home, "--model", "qwen2.5-0.6b")
    assert done.returncode == 2, done.stderr
    text = " ".join(done.stderr.split())
    assert "'qwen2.5-0.6b' is not in the catalog" in text and "did you mean qwen2.5-0.5b" in text
    assert "starting" not in done.stderr  # refused before anything listened
    assert _tree(home) == []  # no catalog.yaml, no demo model, nothing

    done = _serve(home, "--model", "nope")
    assert done.returncode == 2 and "'nope' is not in the catalog" in " ".join(done.stderr.split())
    assert _tree(home) == []


def test_serve_named_model_not_cached_offline_is_an_error_not_noise(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = _serve(home, "--model", "qwen2.5-0.5b")
    assert done.returncode == 2
    assert "not cached and downloads are off" in " ".join(done.stderr.split())
    assert _tree(home) == []


def test_rag_ingest_of_missing_path_exits_nonzero_and_creates_no_collection(lokal_home: Path) -> None:
    res = runner.invoke(app, ["rag", "ingest", str(lokal_home / "nonexistent"), "-c", "typo"])
    assert res.exit_code == 1
    assert "no such file or folder" in res.output
    assert not (lokal_home / "rag").exists() or _tree(lokal_home / "rag") == []
    listed = runner.invoke(app, ["rag", "list", "--json"])
    assert listed.exit_code == 0 and "typo" not in listed.output


def test_rag_ingest_of_nothing_indexable_creates_no_collection(lokal_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "binaries"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"\x00\x01")
    res = runner.invoke(app, ["rag", "ingest", str(folder), "-c", "empty"])
    assert res.exit_code == 1 and "no collection created" in res.output
    assert not (lokal_home / "rag" / "empty.sqlite").exists()
    assert "empty" not in runner.invoke(app, ["rag", "list", "--json"]).output


def test_model_and_cache_remove_ask_and_no_changes_nothing(lokal_home: Path, tiny_gguf: Path) -> None:
    added = runner.invoke(app, ["model", "add", str(tiny_gguf), "--alias", "mine", "--copy"])
    assert added.exit_code == 0, added.output
    catalog_before = (lokal_home / "catalog.yaml").read_text()
    files_before = _tree(lokal_home / "models")
    assert files_before

    res = runner.invoke(app, ["cache", "remove", "mine"], input="n\n")
    assert res.exit_code == 1 and "delete" in res.output and " KB of cached files of mine" in res.output
    res = runner.invoke(app, ["model", "remove", "mine"], input="n\n")
    assert res.exit_code == 1 and "remove mine" in res.output and "KB of files" in res.output
    assert (lokal_home / "catalog.yaml").read_text() == catalog_before
    assert _tree(lokal_home / "models") == files_before

    res = runner.invoke(app, ["model", "remove", "mine"], input="y\n")
    assert res.exit_code == 0 and "removed mine" in res.output and "freed" in res.output
    assert not [p for p in (lokal_home / "models").rglob("*") if p.is_file()]


def test_model_remove_of_a_loaded_model_unloads_it_first(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    write_catalog(home, standard_entries(tiny_gguf))
    with LokalServer(home, args=["--model", "tiny"]) as srv:
        monkeypatch.setenv("LOKAL_HOME", str(home))
        get_settings.cache_clear()
        try:
            r = httpx.post(srv.url + "/lokal/models/tiny-coder/load", timeout=60)
            assert r.status_code == 200, (r.text, srv.log())

            def loaded() -> list[str]:
                return [m["alias"] for m in httpx.get(srv.url + "/lokal/ps").json()["models"]]

            assert "tiny-coder" in loaded()
            res = runner.invoke(app, ["model", "remove", "tiny-coder", "-u", srv.url], input="n\n")
            assert res.exit_code == 1 and "will be unloaded first" in " ".join(res.output.split())
            assert "tiny-coder" in loaded()  # "no" changed nothing
            aliases = [m["alias"] for m in yaml.safe_load((home / "catalog.yaml").read_text())["models"]]
            assert "tiny-coder" in aliases

            res = runner.invoke(app, ["model", "remove", "tiny-coder", "-u", srv.url, "--yes"])
            assert res.exit_code == 0, res.output
            assert f"unloaded tiny-coder-cpu:1 from {srv.url}" in res.output
            assert "tiny-coder" not in loaded()
            aliases = [m["alias"] for m in yaml.safe_load((home / "catalog.yaml").read_text())["models"]]
            assert "tiny-coder" not in aliases
            assert tiny_gguf.exists()  # the user's file stays
        finally:
            get_settings.cache_clear()
