"""`lokal model ps` and `foundry service ps` read whatever /lokal/ps says without a traceback: a stub server
answers with the odd values an older or broken server could send (Infinity, NaN, nulls, strings, missing keys)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lokal.cli.main import app as lokal_app
from lokal.config import get_settings
from lokal.foundry.cli import app as foundry_app
from tests.support.server import LokalServer

runner = CliRunner()

ODD = (
    b'{"server_rss_bytes": "lots", "models": ['
    b'{"alias": "inf-ttl", "id": "a:1", "engine": "llamacpp", "memory_bytes": 1e6, "load_seconds": NaN,'
    b' "ttl_left": Infinity, "queue_depth": null, "slots": 4, "slots_busy": "x"},'
    b'{"alias": "[bold]sparse[/]", "id": null},'
    b'"not a row", 7]}'
)


class _Stub(BaseHTTPRequestHandler):
    body = ODD

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        payload = b'{"status": "ok"}' if self.path.startswith("/health") else self.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Stub]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("LOKAL_PORT", str(server.server_address[1]))
    get_settings.cache_clear()
    try:
        yield _Stub
    finally:
        server.shutdown()
        server.server_close()
        _Stub.body = ODD
        get_settings.cache_clear()


def test_lokal_model_ps_shows_odd_values_as_dashes(stub: type[_Stub]) -> None:
    res = runner.invoke(lokal_app, ["model", "ps"])
    assert res.exit_code == 0, res.output
    assert res.exception is None
    assert "inf-ttl" in res.output and "[bold]sparse[/]" in res.output  # markup in a name is shown, not applied
    assert "1 MB" in res.output and "-/4" in res.output.replace(" ", "")
    res = runner.invoke(lokal_app, ["model", "ps", "--json"])
    assert res.exit_code == 0 and "inf-ttl" in res.output


def test_foundry_service_ps_shows_odd_values_as_dashes(stub: type[_Stub]) -> None:
    res = runner.invoke(foundry_app, ["service", "ps"])
    assert res.exit_code == 0, res.output
    assert res.exception is None
    rows = {line.split()[0]: line for line in res.output.splitlines()[2:]}
    assert rows["inf-ttl"].split()[-1] == "-" and "1.0 MiB" in rows["inf-ttl"]
    assert rows["[bold]sparse[/]"].split()[1:] == ["-", "-", "-"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'{"models": {"a": 1}}', b"<html>oops</html>"])
def test_payloads_that_are_not_a_ps_answer_end_cleanly(stub: type[_Stub], body: bytes) -> None:
    stub.body = body
    for app, args in ((lokal_app, ["model", "ps"]), (foundry_app, ["service", "ps"])):
        res = runner.invoke(app, args)
        assert res.exception is None or isinstance(res.exception, SystemExit), res.output
        assert "Traceback" not in res.output


def test_load_with_an_infinite_ttl_is_refused_and_ps_still_works(
    lokal_server: LokalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOKAL_PORT", str(lokal_server.port))
    get_settings.cache_clear()
    try:
        res = runner.invoke(lokal_app, ["model", "load", "tiny", "--ttl", "inf"])
        assert res.exit_code == 1 and "ttl must be" in res.output
        res = runner.invoke(lokal_app, ["model", "ps"])
        assert res.exit_code == 0 and res.exception is None
        res = runner.invoke(foundry_app, ["service", "ps"])
        assert res.exit_code == 0 and res.exception is None
    finally:
        get_settings.cache_clear()
