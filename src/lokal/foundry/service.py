"""Find, start and stop a background lokal server (the `foundry service` verbs and `lokal model load` use it).

`start()` launches `lokal serve` detached (its own session, output to LOKAL_HOME/logs/service.log) and records
its pid and port in LOKAL_HOME/service.pid and LOKAL_HOME/service.port. `status()` reads those files and asks
the server's /health; with no pid file it still finds a server someone started by hand on LOKAL_PORT.

This module is on the path of `foundry service status`, which Foundry Local's SDK runs over and over while it
waits for the service: it imports nothing heavier than lokal.config, and talks HTTP with the standard library.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from lokal.config import Settings, child_env, get_settings

PID_FILE = "service.pid"
PORT_FILE = "service.port"
LOG_FILE = Path("logs") / "service.log"
_LOCK_FILE = "service.lock"
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class ServiceError(RuntimeError):
    """The background server could not be started or stopped; the message says why and where to look."""


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    url: str  # http://HOST:PORT, no trailing slash; the OpenAI base URL is url + "/v1"
    port: int
    pid: int | None  # None: a server this module did not start (found by probing LOKAL_PORT)
    ready: bool  # False while the process is up but not yet answering /health

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def pid_path(settings: Settings | None = None) -> Path:
    return _settings(settings).home / PID_FILE


def port_path(settings: Settings | None = None) -> Path:
    return _settings(settings).home / PORT_FILE


def log_path(settings: Settings | None = None) -> Path:
    return _settings(settings).home / LOG_FILE


def _connect_host(host: str) -> str:
    # A server bound to every interface is reachable on loopback; clients must not dial 0.0.0.0.
    return "127.0.0.1" if host in _WILDCARD_HOSTS else host


def _url(settings: Settings, port: int) -> str:
    host = _connect_host(settings.host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# No proxy: an HTTP(S)_PROXY meant for the internet must not intercept calls to the local server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health(url: str, timeout: float = 1.0) -> int | None:
    """HTTP status of GET /health, or None when nothing answers."""
    try:
        with _OPENER.open(url + "/health", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _is_lokal_process(pid: int) -> bool:
    """The pid is alive and runs lokal (a recycled pid of another program does not count)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "lokal" in cmdline


def _clear_files(settings: Settings) -> None:
    for path in (pid_path(settings), port_path(settings)):
        path.unlink(missing_ok=True)


def status(settings: Settings | None = None, *, wait: float = 0.0) -> ServiceInfo | None:
    """The running server, or None. With `wait`, a server that is still starting gets that long to answer.

    Costs one loopback HTTP request when nothing is starting, so it can be polled.
    """
    settings = _settings(settings)
    pid = _read_int(pid_path(settings))
    port = _read_int(port_path(settings))
    if pid is not None and port is not None:
        url = _url(settings, port)
        deadline = time.monotonic() + wait
        while True:
            if _health(url) == 200:
                return ServiceInfo(url, port, pid, ready=True)
            if not _is_lokal_process(pid):
                _clear_files(settings)  # it died (or the pid was recycled): the files are stale
                break
            if time.monotonic() >= deadline:
                return ServiceInfo(url, port, pid, ready=False)
            time.sleep(0.1)
    # A server started by hand (`lokal serve`) keeps no pid file: probe the configured port.
    url = _url(settings, settings.port)
    if _health(url, timeout=0.5) == 200:
        return ServiceInfo(url, settings.port, None, ready=True)
    return None


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _log_tail(settings: Settings, lines: int = 20) -> str:
    try:
        text = log_path(settings).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start(
    settings: Settings | None = None, *, timeout: float = 60.0, serve_args: tuple[str, ...] = ()
) -> ServiceInfo:
    """Start `lokal serve` in the background (or return the one already running) and wait until it is ready.

    The server gets LOKAL_HOME, LOKAL_HOST and LOKAL_PORT from `settings`; every other setting comes from the
    environment. It runs with `--no-pull`: starting the service never downloads a model.
    """
    from filelock import FileLock

    settings = _settings(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    # Two `start` calls at once (the SDK polls while a user also types) must not launch two servers.
    with FileLock(str(settings.home / _LOCK_FILE)):
        found = status(settings, wait=timeout)
        if found is not None:
            if not found.ready:
                raise ServiceError(
                    f"lokal (pid {found.pid}) is running but has not answered on {found.url} "
                    f"within {timeout:.0f}s; see {log_path(settings)}"
                )
            return found
        host, port = _connect_host(settings.host), settings.port
        if _port_taken(host, port):
            raise ServiceError(
                f"port {port} on {host} is in use by a program that is not a lokal server; "
                "stop it or choose another port with LOKAL_PORT"
            )
        proc = _spawn(settings, serve_args)
        _DETACHED.append(proc)
        port_path(settings).write_text(f"{port}\n", encoding="utf-8")
        # The pid file goes last: its presence means both files are complete.
        pid_path(settings).write_text(f"{proc.pid}\n", encoding="utf-8")
        url = _url(settings, port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _health(url) == 200:
                return ServiceInfo(url, port, proc.pid, ready=True)
            if proc.poll() is not None:
                _clear_files(settings)
                raise ServiceError(
                    f"lokal serve exited with code {proc.returncode} before it was ready; "
                    f"last lines of {log_path(settings)}:\n{_log_tail(settings)}"
                )
            time.sleep(0.1)
        _terminate(proc.pid, 5.0)
        _reap(proc.pid)
        _clear_files(settings)
        raise ServiceError(
            f"lokal serve did not answer on {url} within {timeout:.0f}s; see {log_path(settings)}"
        )


# The servers this process started and left running on purpose (found again by their pid file): held here so
# that dropping the handle does not read as a leaked child (Popen warns when collected while its child runs).
_DETACHED: list[subprocess.Popen[bytes]] = []


def _spawn(settings: Settings, serve_args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    log = log_path(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(
        LOKAL_HOME=str(settings.home), LOKAL_HOST=settings.host, LOKAL_PORT=str(settings.port), PYTHONUNBUFFERED="1"
    )
    cmd = [
        sys.executable, "-m", "lokal", "serve", "--host", settings.host, "--port", str(settings.port),
        "--no-pull", "--log-level", "warning", *serve_args,
    ]  # fmt: skip
    # Own session and no inherited pipes: the server outlives this command and never holds a caller's stdout
    # open (the SDK reads `foundry service ...` output until EOF).
    windows_flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
        subprocess, "DETACHED_PROCESS", 0
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            start_new_session=sys.platform != "win32",
            creationflags=windows_flags if sys.platform == "win32" else 0,
        )


def _terminate(pid: int, timeout: float) -> None:
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)
    except psutil.NoSuchProcess:
        pass


def stop(settings: Settings | None = None, *, timeout: float = 15.0) -> bool:
    """Stop the server `start` launched; False when none was running. A hand-started server is refused."""
    settings = _settings(settings)
    found = status(settings)
    if found is None:
        _clear_files(settings)
        return False
    if found.pid is None:
        raise ServiceError(
            f"the lokal server on {found.url} was not started by `foundry service start`/`lokal` in the "
            f"background (no {pid_path(settings)}); stop it where it runs"
        )
    _terminate(found.pid, timeout)
    _reap(found.pid)
    _clear_files(settings)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status of a server this process started (else it stays a zombie until we exit)."""
    for proc in [p for p in _DETACHED if p.pid == pid]:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
        _DETACHED.remove(proc)


def restart(settings: Settings | None = None, *, timeout: float = 60.0) -> ServiceInfo:
    stop(settings)
    return start(settings, timeout=timeout)


def ensure(settings: Settings | None = None, *, timeout: float = 60.0) -> ServiceInfo:
    """The running server, starting one when there is none (what every `foundry model ...` verb needs)."""
    found = status(settings, wait=timeout)
    if found is not None and found.ready:
        return found
    return start(settings, timeout=timeout)


def describe(info: ServiceInfo | None) -> str:
    """One JSON line for scripts (`foundry service status --json`)."""
    if info is None:
        return json.dumps({"running": False})
    return json.dumps(
        {"running": True, "url": info.url, "port": info.port, "pid": info.pid, "ready": info.ready}
    )
