"""Commands that talk to a running server pick it by --base-url/--host/--port/LOKAL_BASE_URL and name it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lokal.cli import _common
from lokal.cli.main import app
from lokal.config import get_settings
from tests.support.server import LokalServer, free_port

runner = CliRunner()


@pytest.fixture
def elsewhere(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """LOKAL_PORT points at a port nobody serves: a command that ignored --base-url would fail there."""
    port = free_port()
    monkeypatch.setenv("LOKAL_PORT", str(port))
    monkeypatch.delenv("LOKAL_BASE_URL", raising=False)
    get_settings.cache_clear()
    return port


def test_precedence(elsewhere: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _common.root() == f"http://127.0.0.1:{elsewhere}"
    monkeypatch.setenv("LOKAL_BASE_URL", "http://10.0.0.2:9000/v1/")
    assert _common.root() == "http://10.0.0.2:9000"
    assert _common.root(port=5391) == "http://127.0.0.1:5391"
    assert _common.root("http://h:1/v1", "x", 2) == "http://h:1"


def test_ps_load_unload_and_run_follow_base_url(lokal_server: LokalServer, elsewhere: int) -> None:
    url = ["--base-url", lokal_server.url]
    res = runner.invoke(app, ["model", "load", "tiny-coder", *url])
    assert res.exit_code == 0 and lokal_server.url in res.output
    assert "SYNTHETIC" in res.output  # the test GGUF comes from lokal's synthetic writer, and the server says so
    ps = runner.invoke(app, ["model", "ps", *url])
    assert ps.exit_code == 0 and f"loaded models on {lokal_server.url}" in ps.output
    ran = runner.invoke(app, ["run", "tiny", "-p", "x", "--max-tokens", "3", "--port", str(lokal_server.port)])
    assert ran.exit_code == 0, ran.output
    assert "tiny is SYNTHETIC" in ran.output
    res = runner.invoke(app, ["model", "unload", "tiny-coder", "-u", lokal_server.base_url])
    assert res.exit_code == 0 and "unloaded tiny-coder from" in res.output


def test_errors_name_the_server_they_tried(elsewhere: int) -> None:
    res = runner.invoke(app, ["model", "ps"])
    assert res.exit_code == 1 and f"127.0.0.1:{elsewhere}" in res.output and "--base-url" in res.output
    res = runner.invoke(app, ["model", "ps", "--base-url", "http://127.0.0.1:1"])
    assert res.exit_code == 1 and "http://127.0.0.1:1" in res.output


def test_run_through_server_labels_a_synthetic_model(tiny_gguf: Path, tmp_path: Path) -> None:
    from lokal.catalog.catalog import Catalog
    from lokal.catalog.synth import DEMO_SHAPE, synthesize
    from tests.support.models import standard_entries, write_catalog

    # A server of its own: registering a model in the session's shared server would change what other tests see.
    home = tmp_path / "home"
    write_catalog(home, standard_entries(tiny_gguf))
    server = LokalServer(home).start()
    try:
        # Registered in the served home: the server's live catalog picks it up without a restart.
        settings = get_settings().model_copy(update={"home": home})
        synthesize(settings, "tiny", "q8_0", "noise-model", shape=DEMO_SHAPE)
        assert Catalog.load(settings).get("noise-model") is not None
        res = runner.invoke(app, ["run", "noise-model", "-p", "hi", "--max-tokens", "3", "-u", server.url])
    finally:
        server.stop()
    assert res.exit_code == 0, res.output
    assert "noise-model is SYNTHETIC" in res.output


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("lokal ")


def test_serve_on_a_busy_port_fails_before_claiming_to_serve(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {"LOKAL_HOME": str(tmp_path), "LOKAL_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(
            [sys.executable, "-m", "lokal", "serve", "--port", str(port), "--no-pull"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert proc.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in proc.stderr and "--port" in proc.stderr
    assert "starting on" not in proc.stderr and not (tmp_path / "catalog.yaml").exists()


def test_serve_prints_the_playground_and_logs_requests_and_loads(tiny_gguf: Path, tmp_path: Path) -> None:
    import httpx

    from tests.support.models import standard_entries, write_catalog

    write_catalog(tmp_path, standard_entries(tiny_gguf))
    with LokalServer(tmp_path, args=["--model", "tiny", "--log-level", "info"]) as srv:
        r = httpx.post(
            srv.base_url + "/chat/completions",
            json={"model": "tiny-coder", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3},
            timeout=60,
        )
        assert r.status_code == 200
        httpx.post(srv.url + "/lokal/models/tiny-coder/unload", timeout=30)
        log = srv.log()
    assert f"playground: {srv.url}/" in log
    assert "POST /v1/chat/completions model=tiny-coder status=200 tokens=" in log
    assert "loaded tiny-coder (" in log and "MiB" in log and "unloaded tiny-coder" in log


def test_list_commands_take_json(lokal_home: Path, tiny_gguf: Path) -> None:
    res = runner.invoke(app, ["model", "add", str(tiny_gguf), "--alias", "mine"])
    assert res.exit_code == 0, res.output
    rows = json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout)
    mine = next(r for r in rows if r["alias"] == "mine")
    assert mine["synthetic"] is True  # `model add` kept the GGUF's own synthetic flag
    cached = json.loads(runner.invoke(app, ["cache", "list", "--json"]).stdout)
    assert {"alias": "mine", "state": "external"}.items() <= next(c for c in cached if c["alias"] == "mine").items()
    info = runner.invoke(app, ["model", "info", "mine"])
    assert info.exit_code == 0 and "SYNTHETIC" in info.output and "context length" in info.output
