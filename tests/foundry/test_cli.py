"""The `foundry` command: output the SDK parses, service verbs, model and cache verbs against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from foundry_local.service import get_service_uri
from typer.testing import CliRunner

from lokal.foundry import service
from lokal.foundry.cli import app
from lokal.foundry.routes import NOT_DOWNLOADED_PHRASE
from tests.foundry.conftest import DL_CPU_ID, TINY_ID, Files, FoundryHome, foundry_home

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, files: Files, foundry_bin: Path
        ) -> Iterator[FoundryHome]:  # fmt: skip
    with foundry_home(tmp_path_factory.mktemp("cli"), tiny_gguf, files, foundry_bin) as home:
        yield home


def foundry(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def test_status_path_imports_no_server_or_model_runtime(env: FoundryHome) -> None:
    code = textwrap.dedent("""
        import sys
        from lokal.foundry.cli import main
        sys.argv = ["foundry", "service", "status"]
        try:
            main()
        except SystemExit:
            pass
        heavy = {"fastapi", "starlette", "uvicorn", "llama_cpp", "torch", "numpy", "httpx", "sentence_transformers"}
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cache_location_and_status_when_stopped(env: FoundryHome) -> None:
    code, out = foundry("cache", "location")
    assert code == 0 and out.strip() == f"Cache directory path: {env.home / 'models'}"
    code, out = foundry("service", "status")
    assert code == 1 and "not running" in out
    assert get_service_uri() is None  # the SDK, running the `foundry` on PATH, agrees
    code, out = foundry("service", "status", "--json")
    assert json.loads(out) == {"running": False}


def test_service_start_status_ps_and_model_verbs(env: FoundryHome) -> None:
    code, out = foundry("service", "start")
    assert code == 0 and f"{env.url}/" in out
    pid = service.status(env.settings)
    assert pid is not None and pid.pid is not None

    # The SDK finds the service exactly the way it finds Foundry Local: first http://HOST:PORT of status.
    assert get_service_uri() == env.url
    code, out = foundry("service", "status")
    assert code == 0 and out.splitlines()[0] == f"Model management service is running on {env.url}/openai/status"
    code, out = foundry("service", "start")
    assert code == 0 and "already running" in out

    code, out = foundry("model", "list")
    assert code == 0
    rows = {line.split()[-2] if line.endswith("(cached)") else line.split()[-1]: line for line in out.splitlines()}
    assert rows[TINY_ID].endswith("(cached)") and rows[TINY_ID].startswith("tiny ")
    assert not rows[DL_CPU_ID].endswith("(cached)")

    code, out = foundry("model", "info", "tiny-dl", "--json")
    assert code == 0 and json.loads(out)["name"] == DL_CPU_ID

    code, out = foundry("model", "load", "tiny", "--ttl", "50")
    assert code == 0 and TINY_ID in out
    code, out = foundry("service", "ps")
    assert code == 0 and TINY_ID in out
    code, out = foundry("model", "run", "tiny", "--prompt", "hello", "--max-tokens", "4")
    assert code == 0 and out.strip()  # noise from random weights, but some text
    code, out = foundry("model", "run", "tiny", "--max-tokens", "3", input="hello\nexit\n")
    assert code == 0 and "Chatting with tiny" in out and out.count("> ") == 2  # answered, then left on "exit"
    code, out = foundry("model", "unload", "tiny")
    assert code == 0 and "unloaded" in out
    code, out = foundry("service", "ps")
    assert "No models are loaded" in out

    code, out = foundry("model", "load", "tiny-dl")
    assert code == 1 and NOT_DOWNLOADED_PHRASE in out
    code, out = foundry("model", "download", "tiny-dl")
    assert code == 0 and "100.0%" in out and "downloaded" in out
    code, out = foundry("cache", "list")
    assert code == 0 and DL_CPU_ID in out and TINY_ID in out
    code, out = foundry("model", "load", "tiny-dl")
    assert code == 0
    code, out = foundry("cache", "remove", "tiny-dl", "--yes")
    assert code == 0 and f"Removed {DL_CPU_ID}" in out
    assert httpx.get(env.url + "/openai/loadedmodels").json() == []  # unloaded before its file went
    code, out = foundry("cache", "list")
    assert DL_CPU_ID not in out

    code, out = foundry("model", "info", "no-such-model")
    assert code == 1 and "not in the catalog" in out

    code, out = foundry("service", "stop")
    assert code == 0 and "stopped" in out
    assert get_service_uri() is None


def test_workshop_verbs_version_aliases_logs_license_run_retain(env: FoundryHome) -> None:
    from lokal.cli.main import version

    code, out = foundry("--version")
    assert code == 0 and out.split()[0] == version()

    code, out = foundry("service", "start")
    assert code == 0
    try:
        # Short names the workshop uses print exactly what the long ones do.
        assert foundry("model", "ls") == foundry("model", "list")
        assert foundry("cache", "ls") == foundry("cache", "list")
        code, out = foundry("cache", "pwd")
        assert code == 0 and out.strip() == f"Cache directory path: {env.home / 'models'}"
        # The newer CLI's `server` verbs are the service's.
        code, out = foundry("server", "status")
        assert code == 0 and out.splitlines()[0] == f"Model management service is running on {env.url}/openai/status"
        for group in ("service", "server"):
            code, out = foundry(group, "logs", "-n", "20")
            assert code == 0 and f"lokal ready on {env.url}/v1" in " ".join(out.split())

        code, out = foundry("model", "info", "tiny", "--license")
        assert code == 0 and out.strip() == f"License for {TINY_ID}: none"

        code, out = foundry("run", "tiny", "--prompt", "hello", "--max-tokens", "4", "--verbose")
        assert code == 0
        assert f"Model {TINY_ID} (tiny)" in out and "Model loaded in" in out
        assert "time to first token" in out and "4 tokens" in out and "tokens/s" in out

        def loaded() -> dict[str, Any]:
            return {m["id"]: m for m in httpx.get(env.url + "/lokal/ps").json()["models"]}

        code, out = foundry("model", "run", "tiny", "--prompt", "hi", "--max-tokens", "2", "--no-retain")
        assert code == 0 and TINY_ID not in loaded()  # unloaded when the session ended
        code, out = foundry("model", "run", "tiny", "--prompt", "hi", "--max-tokens", "2")
        assert code == 0 and loaded()[TINY_ID]["ttl_left"] <= 600  # the default: stays loaded, usual TTL
        code, out = foundry("model", "run", "tiny", "--prompt", "hi", "--max-tokens", "2", "--retain")
        assert code == 0 and loaded()[TINY_ID]["ttl_left"] > 7 * 24 * 3600  # kept, no idle unload
    finally:
        foundry("service", "stop")


def test_cache_cd_points_the_cache_elsewhere_and_refuses_to_strand_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lokal.config import get_settings
    from tests.support.server import free_port

    home = tmp_path / "home"
    monkeypatch.setenv("LOKAL_HOME", str(home))
    monkeypatch.setenv("LOKAL_PORT", str(free_port()))  # no service there
    get_settings.cache_clear()
    try:
        elsewhere = tmp_path / "big-disk" / "models"
        code, out = foundry("cache", "cd", str(elsewhere))
        assert code == 0 and out.strip() == f"Cache directory path: {elsewhere.resolve()}"
        assert (home / "models").resolve() == elsewhere.resolve() and elsewhere.is_dir()
        (elsewhere / "m" / "1").mkdir(parents=True)
        (elsewhere / "m" / "1" / "w.gguf").write_bytes(b"x")

        # Pointing away from a cache that holds models would strand them: refused, nothing changed.
        other = tmp_path / "other"
        (home / "models").unlink()
        (home / "models").mkdir()
        (home / "models" / "keep.gguf").write_bytes(b"y")
        code, out = foundry("cache", "cd", str(other))
        assert code == 1 and "holds models; move them" in out
        assert not other.exists() and (home / "models" / "keep.gguf").read_bytes() == b"y"
    finally:
        get_settings.cache_clear()
