"""lokal.foundry.service against real background servers: start detached, find, find by port, stop, stale files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from lokal.foundry import service
from tests.foundry.conftest import Files, FoundryHome, foundry_home


@pytest.fixture
def env(tmp_path: Path, tiny_gguf: Path, files: Files, foundry_bin: Path) -> Iterator[FoundryHome]:
    with foundry_home(tmp_path, tiny_gguf, files, foundry_bin) as home:
        yield home


@pytest.mark.serial  # status answers within 1 s
def test_start_find_and_stop_a_detached_server(env: FoundryHome) -> None:
    settings = env.settings
    assert service.status(settings) is None

    info = service.start(settings)
    assert info.ready and info.url == env.url and info.base_url == env.url + "/v1"
    assert info.pid is not None
    assert service.pid_path(settings).read_text().strip() == str(info.pid)
    assert service.port_path(settings).read_text().strip() == str(env.port)
    assert httpx.get(env.url + "/health").status_code == 200
    # Its own session: closing the terminal (or the SDK's `foundry service start` process) leaves it running.
    assert os.getsid(info.pid) != os.getsid(0)

    t0 = time.perf_counter()
    again = service.status(settings)
    took = time.perf_counter() - t0
    assert again is not None and again.pid == info.pid
    assert took < 1.0, f"status took {took:.2f}s; the SDK polls it"
    assert service.start(settings).pid == info.pid  # idempotent: no second server

    # Without the files (as after `lokal serve` by hand) it is still found, by its port, but not ours to stop.
    pid_text = service.pid_path(settings).read_text()
    service.pid_path(settings).unlink()
    found = service.status(settings)
    assert found is not None and found.pid is None and found.url == env.url
    with pytest.raises(service.ServiceError, match="not started by"):
        service.stop(settings)
    service.pid_path(settings).write_text(pid_text)

    assert service.stop(settings) is True
    assert not psutil.pid_exists(info.pid) or psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
    assert not service.pid_path(settings).exists() and not service.port_path(settings).exists()
    assert service.status(settings) is None
    assert service.stop(settings) is False


def test_stale_pid_file_is_cleared(env: FoundryHome) -> None:
    settings = env.settings
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    settings.home.mkdir(parents=True, exist_ok=True)
    service.port_path(settings).write_text(f"{env.port}\n")
    service.pid_path(settings).write_text(f"{dead.pid}\n")
    assert service.status(settings, wait=5) is None
    assert not service.pid_path(settings).exists()


def test_port_held_by_another_program_is_reported(env: FoundryHome) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", env.port))
        squatter.listen()
        with pytest.raises(service.ServiceError, match=f"port {env.port}.*in use"):
            service.start(env.settings)
    assert not service.pid_path(env.settings).exists()
