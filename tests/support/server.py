"""A real `lokal serve` in a subprocess on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LokalServer:
    def __init__(self, home: Path, *, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.log_path = home / "server.log"
        self._env = {**os.environ, "LOKAL_HOME": str(home), "LOKAL_OFFLINE": "1", **(env or {})}
        self._args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> LokalServer:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "lokal",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-pull",
            "--log-level",
            "warning",
            *self._args,
        ]
        self.proc = subprocess.Popen(cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lokal serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"lokal serve did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> LokalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
