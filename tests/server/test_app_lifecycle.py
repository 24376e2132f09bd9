"""The app in-process under a real uvicorn: readiness while start-up work runs, and 500s that keep the connection.

No model is loaded here: these are properties of the app's shell, so they run without llama.cpp.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lokal.config import Settings
from lokal.server.app import create_app
from tests.support.server import run_app


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path / "home", offline=True, **kw)  # type: ignore[arg-type]


def test_health_is_503_while_start_up_work_runs(tmp_path: Path) -> None:
    release = threading.Event()
    seen_cancel: list[bool] = []

    def prepare(cancel: threading.Event) -> str:
        release.wait(20)
        seen_cancel.append(cancel.is_set())
        return "demo"

    app = create_app(_settings(tmp_path), prepare=prepare)
    with run_app(app) as url:
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json() == {"status": "starting"}
        busy = httpx.get(url + "/v1/models")
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "starting"
        assert busy.headers["retry-after"] == "1"
        assert httpx.get(url + "/").status_code == 200  # the playground page can show "starting"
        release.set()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.05)
        assert httpx.get(url + "/v1/models").status_code == 200
        assert app.state.lokal.extras["default_model"] == "demo"
    assert seen_cancel == [False]


def test_failed_start_up_work_still_serves(tmp_path: Path) -> None:
    def prepare(cancel: threading.Event) -> str:
        raise RuntimeError("disk full")

    with run_app(create_app(_settings(tmp_path), prepare=prepare)) as url:
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_shutdown_cancels_start_up_work(tmp_path: Path) -> None:
    cancelled = threading.Event()

    def prepare(cancel: threading.Event) -> str:
        cancel.wait(20)
        cancelled.set()
        return "demo"

    with run_app(create_app(_settings(tmp_path), prepare=prepare)) as url:
        assert httpx.get(url + "/health").status_code == 503
    assert cancelled.wait(5)


@pytest.fixture
def boom_url(tmp_path: Path) -> Iterator[str]:
    app = create_app(_settings(tmp_path))

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("engine exploded")

    with run_app(app) as url:
        yield url


def test_unexpected_error_is_a_json_500_on_a_kept_connection(boom_url: str) -> None:
    with httpx.Client(base_url=boom_url) as client:
        resp = client.get("/v1/boom")
        assert resp.status_code == 500
        err = resp.json()["error"]
        assert err["type"] == "server_error" and "RuntimeError: engine exploded" in err["message"]
        again = client.get("/v1/models")
        assert again.status_code == 200
        port = lambda r: r.extensions["network_stream"].get_extra_info("client_addr")[1]  # noqa: E731
        assert port(resp) == port(again)
        metrics = client.get("/metrics").text
    assert 'endpoint="/v1/boom",method="GET",status="500"' in metrics
