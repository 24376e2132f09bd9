"""lokal installed the way a new user installs it: a fresh virtualenv, wheels only, no C/C++ compiler.

Used by the slow packaging test (tests/packaging/) and by benchmarks/bench_install.py, which times the same
steps. "No compiler" is enforced twice: every wheel-less dependency is refused (`--only-binary=:all:`), and
the compilers a build would look for (`cc`, `gcc`, `c++`, `g++`, `clang`, `clang++`, and `CC`/`CXX`) are shims
that fail, so a build that slipped through would fail loudly instead of compiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang++")


@dataclass
class Timings:
    venv_s: float = 0.0
    wheel_s: float = 0.0
    install_s: float = 0.0
    serve_to_first_token_s: float = 0.0
    venv_bytes: int = 0

    @property
    def total_s(self) -> float:
        return self.venv_s + self.wheel_s + self.install_s + self.serve_to_first_token_s


def no_compiler_env(work: Path) -> dict[str, str]:
    shims = work / "no-compiler"
    shims.mkdir(parents=True, exist_ok=True)
    for name in COMPILERS:
        shim = shims / name
        shim.write_text("#!/bin/sh\necho 'no compiler here (lokal base-install test)' >&2\nexit 1\n")
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(
        PATH=f"{shims}{os.pathsep}{env.get('PATH', '')}",
        CC="false",
        CXX="false",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{(done.stderr or done.stdout)[-4000:]}")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def install(work: Path, timings: Timings, *, timeout: float = 900.0) -> Path:
    """A venv under `work` with lokal's base install (no extras); returns the venv's folder."""
    env = no_compiler_env(work)
    venv = work / "venv"
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(venv)], env, timeout)
    timings.venv_s = time.perf_counter() - t0
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    wheels = work / "wheel"
    t0 = time.perf_counter()
    _run([*pip, "wheel", "-q", "--no-deps", "--only-binary=:all:", "-w", str(wheels), str(ROOT)], env, timeout)
    timings.wheel_s = time.perf_counter() - t0
    (wheel,) = wheels.glob("lokal-*.whl")
    t0 = time.perf_counter()
    _run([*pip, "install", "-q", "--only-binary=:all:", str(wheel)], env, timeout)
    timings.install_s = time.perf_counter() - t0
    timings.venv_bytes = folder_bytes(venv)
    return venv


def first_streamed_token(venv: Path, home: Path, timings: Timings, *, timeout: float = 300.0) -> dict[str, object]:
    """Starts `lokal serve` from the venv, offline with an empty home, and streams one chat completion.

    Returns what the server said: the model it serves, whether /v1/models labels it synthetic, the text."""
    env = no_compiler_env(home.parent)
    env.update(LOKAL_HOME=str(home), LOKAL_OFFLINE="1", HF_HUB_OFFLINE="1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home.parent / "serve.log").open("wb")
    t0 = time.perf_counter()
    cmd = [str(venv / "bin" / "lokal"), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-pull"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lokal serve exited ({proc.returncode}):\n{_tail(home.parent / 'serve.log')}")
            if time.monotonic() > deadline:
                log_tail = _tail(home.parent / "serve.log")
                raise TimeoutError(f"lokal serve did not answer in {timeout:.0f} s:\n{log_tail}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        models = httpx.get(url + "/v1/models", timeout=10.0).json()["data"]
        model = models[0]
        body = {
            "model": model["id"],
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 16,
            "stream": True,
        }
        text, chunks = "", 0
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=timeout) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                if delta and not text:
                    timings.serve_to_first_token_s = time.perf_counter() - t0
                text += delta
                chunks += bool(delta)
        return {"model": model, "text": text, "chunks": chunks}
    finally:
        stop_process(proc)
        log.close()


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
