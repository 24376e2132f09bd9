"""Stalled downloads through a real `lokal serve` must not hold up a chat that needs a model load.

Before downloads had their own threads, eight stalled `/openai/download` calls filled asyncio's default pool
(six threads on two cores) and the model load behind a chat waited for them: > 90 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from lokal.config import get_settings
from lokal.foundry.download_pool import DownloadPool
from lokal.server.app import create_app
from tests.catalog.fileserver import FileServer
from tests.foundry.conftest import Files, foundry_entries, foundry_home
from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer

STALLED_ID = "stalled-cpu:1"
DOWNLOADS = 8
WORKERS = 3  # lokal.foundry.download_pool.WORKERS


def _reader(port: int, seen: list[bytes], first: threading.Event, leave: threading.Event) -> None:
    """One client of /openai/download that stays connected until told to leave (a plain socket: closing it
    from its own thread is immediate, unlike an HTTP client blocked in a read)."""
    body = json.dumps({"model": {"Name": STALLED_ID}}).encode()
    head = (
        f"POST /openai/download HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        try:
            while b"starting download" not in data:
                data += sock.recv(65536) or b"-"
            first.set()
            sock.settimeout(0.5)  # what follows at once (the "waiting" line), then silence
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        finally:
            seen.append(data)
            first.set()
        leave.wait(30)


@pytest.mark.serial  # a load within 5 s behind stalled downloads
def test_stalled_downloads_do_not_delay_a_model_load(tmp_path: Path, tiny_gguf: Path) -> None:
    with FileServer() as files:
        files.add("/stalled.gguf", os.urandom(1 << 20), stall_after=64 * 1024)
        home = tmp_path / "home"
        stalled = {"alias": "stalled", "variants": [{"id": STALLED_ID, "url": files.url + "/stalled.gguf"}]}
        write_catalog(home, [tiny_entry("tiny", tiny_gguf, ["general"]), stalled])
        env = {"LOKAL_OFFLINE": "0", "LOKAL_DEVICE": "cpu", "LOKAL_DOWNLOAD_READ_TIMEOUT": "60"}
        with LokalServer(home, env=env, args=["--model", "tiny"]) as server:
            leave = threading.Event()
            streams: list[tuple[list[bytes], threading.Event]] = [([], threading.Event()) for _ in range(DOWNLOADS)]
            readers = [
                threading.Thread(target=_reader, args=(server.port, seen, first, leave), daemon=True)
                for seen, first in streams
            ]
            for reader in readers:
                reader.start()
            for _, first in streams:
                assert first.wait(10), "a download stream never started"
            deadline = time.monotonic() + 10
            while not files.gets("/stalled.gguf") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert files.gets("/stalled.gguf"), "the download never reached the file server"
            assert server.proc is not None and server.proc.poll() is None

            t0 = time.monotonic()
            r = httpx.post(
                server.base_url + "/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                timeout=10,
            )
            took = time.monotonic() - t0
            assert r.status_code == 200, r.text
            assert took < 5.0, f"the chat (with a model load) took {took:.1f} s behind {DOWNLOADS} stalled downloads"
            leave.set()  # the clients go; the server drops their downloads
            for reader in readers:
                reader.join(10)

    # Beyond the pool's size, downloads wait their turn and say so.
    waiting = [seen for seen, _ in streams if b"waiting for a download slot" in b"".join(seen)]
    assert len(waiting) >= DOWNLOADS - WORKERS, [seen for seen, _ in streams]


def test_unverified_download_says_so_in_the_stream(
    tmp_path: Path, tiny_gguf: Path, files: Files, foundry_bin: Path
) -> None:
    with FileServer() as bare, foundry_home(tmp_path, tiny_gguf, files, foundry_bin) as env:
        bare.add("/bare.gguf", os.urandom(256 * 1024), length=False, range_ok=False)
        entry = {"alias": "bare", "variants": [{"id": "bare-cpu:1", "url": bare.url + "/bare.gguf"}]}
        write_catalog(env.home, [*foundry_entries(tiny_gguf, files), entry])
        body = {"model": {"Name": "bare-cpu:1"}}
        with (
            TestClient(create_app(get_settings()), base_url="http://127.0.0.1") as client,
            client.stream("POST", "/openai/download", json=body) as r,
        ):
            lines = [line for line in r.iter_lines() if line.strip()]
    outcome = json.loads(lines[-1])
    assert outcome == {"success": True, "errorMessage": None, "verified": False}
    assert any(line.startswith("warning:") and "unverified" in line for line in lines[:-1]), lines


def test_pool_runs_a_few_at_a_time_and_drops_queued_jobs_that_are_cancelled() -> None:
    async def scenario() -> None:
        pool = DownloadPool(workers=1)
        gate, ran = threading.Event(), []
        first = pool.submit(lambda: gate.wait(5) and ran.append("first"), threading.Event())
        queued = pool.submit(lambda: ran.append("queued"), threading.Event())
        assert pool.waiting() == 1
        queued.cancel()  # the client left while it waited: it never runs
        gate.set()
        await first
        assert ran == ["first"] and pool.waiting() == 0
        stop, started = threading.Event(), threading.Event()
        running = pool.submit(lambda: started.set() or stop.wait(5), stop)
        assert await asyncio.to_thread(started.wait, 5)
        pool.close()  # shutting down stops running downloads through their cancel event
        assert await asyncio.wait_for(running, 2) is True
        with pytest.raises(RuntimeError, match="shutting down"):
            pool.submit(lambda: None, stop)

    asyncio.run(scenario())
