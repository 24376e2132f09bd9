"""Shared by the benchmark scripts: a synthetic real-shaped model (made once, cached under /tmp), percentiles,
server processes."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from tests.support.server import stop_process

from lokal.gguf.synthetic import SHAPES, write_gguf

CACHE = Path(os.environ.get("LOKAL_BENCH_CACHE", "/tmp/lokal-bench"))
REPO = Path(__file__).resolve().parents[1]


def synthetic_model(like: str = "qwen2.5-0.5b", quant: str = "q4_0") -> Path:
    path = CACHE / f"{like}-{quant}.gguf"
    if not path.exists():
        print(f"writing synthetic {like} {quant} to {path} (once) ...", flush=True)
        write_gguf(path, SHAPES[like], quant, like=like)
    return path


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@contextmanager
def serving(cmd: list[str], health_url: str, what: str, timeout: float = 120) -> Iterator[subprocess.Popen[bytes]]:
    """A server process started from `cmd`, yielded once `health_url` answers 200, stopped on exit; when it dies
    or stays unhealthy, the error carries the end of its log."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read only if the server dies; closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def tail() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{tail()}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become healthy in {timeout:.0f} s:\n{tail()}")
            time.sleep(0.2)
        yield proc
    finally:
        stop_process(proc, grace=30)
        log.close()


def spawn_scripted(port: int, *args: str, quiet: bool = False) -> subprocess.Popen[bytes]:
    """tests/support/scripted.py serving on `port` in its own process; `args` are its options (--tokens ...).

    It is a test double, kept out of the package, so it runs from the repository root whatever the caller's
    working directory."""
    out = subprocess.DEVNULL if quiet else None
    cmd = [sys.executable, "-m", "tests.support.scripted", "--port", str(port), *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=out)
