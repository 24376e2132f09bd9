"""The downloader against a real HTTP server on 127.0.0.1: progress, resume, checksums, failures, kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lokal.catalog.cache import Cache
from lokal.catalog.download import download
from lokal.catalog.spec import Variant
from lokal.config import Settings, get_settings
from lokal.errors import ChecksumMismatch, DownloadError, ModelNotDownloaded
from tests.catalog.fileserver import FileServer

MiB = 1 << 20
REPO, FILE = "org/demo-GGUF", "demo-q4_k_m.gguf"


def _payload(size: int = 3 * MiB) -> bytes:
    return os.urandom(size)


def _hub_variant(**kw: object) -> Variant:
    return Variant.model_validate({"id": "demo-q4_k_m-cpu:1", "repo": REPO, "file": FILE, **kw})


def _url_variant(url: str, **kw: object) -> Variant:
    return Variant.model_validate({"id": "direct-cpu:1", "url": url, **kw})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


def test_hub_download_reports_progress_and_verifies(hub: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _payload()
    served = hub.add_hub_file(REPO, FILE, data)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    calls: list[tuple[int, int | None]] = []
    path = download(_hub_variant(), get_settings(), progress=lambda d, t: calls.append((d, t)))

    assert path == Cache(get_settings()).path_for(_hub_variant()) and _sha(path) == served.sha256
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False)) and len(calls) >= 3
    first = hub.requests[0]
    assert (
        first.path == f"/{REPO}/resolve/main/{FILE}"
        and first.headers["authorization"] == "Bearer hf_test_token"
    )
    assert not path.with_name(path.name + ".part").exists()
    # a second call finds it cached and asks nothing
    before = len(hub.requests)
    assert download(_hub_variant(), get_settings()) == path and len(hub.requests) == before


def test_interrupted_transfer_resumes_with_a_range_request(hub: FileServer) -> None:
    data = _payload()
    served = hub.add_hub_file(REPO, FILE, data, cut_first=MiB)
    path = download(_hub_variant(), get_settings())
    cdn = hub.gets(f"/cdn/{REPO}/{FILE}")
    assert len(cdn) == 2 and "range" not in cdn[0].headers
    assert cdn[1].headers["range"] == f"bytes={MiB}-" and cdn[1].status == 206
    assert _sha(path) == served.sha256


def test_partial_file_from_an_earlier_run_is_resumed(hub: FileServer, settings: Settings) -> None:
    data = _payload()
    served = hub.add_hub_file(REPO, FILE, data)
    part = Cache(settings).partial_path(_hub_variant())
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: 2 * MiB])
    calls: list[tuple[int, int | None]] = []
    path = download(_hub_variant(), settings, progress=lambda d, t: calls.append((d, t)))
    [cdn] = hub.gets(f"/cdn/{REPO}/{FILE}")
    assert cdn.headers["range"] == f"bytes={2 * MiB}-" and calls[0] == (2 * MiB, len(data))
    assert _sha(path) == served.sha256


def test_server_ignoring_range_restarts_from_zero(fileserver: FileServer, settings: Settings) -> None:
    data = _payload()
    fileserver.add("/plain.gguf", data, range_ok=False)
    variant = _url_variant(fileserver.url + "/plain.gguf", sha256=hashlib.sha256(data).hexdigest())
    part = Cache(settings).partial_path(variant)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not survive" * 1000)
    path = download(variant, settings)
    [req] = fileserver.gets("/plain.gguf")
    assert "range" in req.headers and req.status == 200
    assert path.read_bytes() == data


def test_complete_part_answered_416_is_published(fileserver: FileServer, settings: Settings) -> None:
    data = _payload(MiB)
    fileserver.add("/done.gguf", data)
    variant = _url_variant(fileserver.url + "/done.gguf", sha256=hashlib.sha256(data).hexdigest())
    part = Cache(settings).partial_path(variant)
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    assert download(variant, settings).read_bytes() == data
    assert fileserver.gets("/done.gguf")[0].status == 416


def test_checksum_mismatch_leaves_nothing_behind(fileserver: FileServer, settings: Settings) -> None:
    fileserver.add("/bad.gguf", _payload(MiB))
    variant = _url_variant(fileserver.url + "/bad.gguf", sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="sha256"):
        download(variant, settings)
    cache = Cache(settings)
    assert not cache.is_cached(variant) and not cache.partial_path(variant).exists()


def test_hub_etag_mismatch_is_caught(hub: FileServer, settings: Settings) -> None:
    hub.add_hub_file(REPO, FILE, _payload(MiB))
    target, headers = hub.redirects[f"/{REPO}/resolve/main/{FILE}"]
    hub.redirects[f"/{REPO}/resolve/main/{FILE}"] = (
        target,
        {**headers, "X-Linked-Etag": '"' + "a" * 64 + '"'},
    )
    with pytest.raises(ChecksumMismatch):
        download(_hub_variant(), get_settings())
    assert not Cache(get_settings()).is_cached(_hub_variant())


def test_exact_catalog_size_is_enforced(fileserver: FileServer, settings: Settings) -> None:
    fileserver.add("/short.gguf", _payload(MiB))
    variant = _url_variant(fileserver.url + "/short.gguf", size_bytes=MiB + 1, size_exact=True)
    with pytest.raises(DownloadError, match="expected"):
        download(variant, settings)
    assert not Cache(settings).is_cached(variant) and not Cache(settings).partial_path(variant).exists()


def test_unreachable_hub_names_model_add(settings: Settings) -> None:
    variant = _url_variant(f"http://127.0.0.1:{_closed_port()}/x.gguf")
    with pytest.raises(DownloadError) as err:
        download(variant, settings)
    assert "cannot reach" in err.value.message and "lokal model add PATH --alias NAME" in err.value.message
    assert not Cache(settings).is_cached(variant)


def test_dns_failure_is_reported_as_unreachable(settings: Settings) -> None:
    variant = _url_variant("http://no-such-host.invalid/x.gguf")
    with pytest.raises(DownloadError, match="lokal model add"):
        download(variant, settings)


def test_offline_setting_forbids_downloads(fileserver: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fileserver.add("/x.gguf", b"x")
    monkeypatch.setenv("LOKAL_OFFLINE", "1")
    get_settings.cache_clear()
    with pytest.raises(DownloadError, match="offline"):
        download(_url_variant(fileserver.url + "/x.gguf"), get_settings())
    assert fileserver.requests == []


@pytest.mark.parametrize(
    ("status", "words"), [(401, "HF_TOKEN"), (403, "gated"), (404, "not found (HTTP 404)"), (400, "HTTP 400")]
)
def test_http_errors_are_explained(hub: FileServer, status: int, words: str) -> None:
    hub.add_hub_file(REPO, FILE, b"", status=status)
    with pytest.raises(DownloadError, match=words.replace("(", r"\(").replace(")", r"\)")):
        download(_hub_variant(), get_settings())
    assert len(hub.gets(f"/cdn/{REPO}/{FILE}")) == 1  # client errors are not retried


def test_user_path_variant_is_never_downloaded(settings: Settings, tmp_path: Path) -> None:
    mine = tmp_path / "mine.gguf"
    variant = Variant(id="mine-cpu:1", path=str(mine))
    with pytest.raises(ModelNotDownloaded, match="does not exist"):
        download(variant, settings)
    mine.write_bytes(b"GGUF")
    assert download(variant, settings) == mine


def test_cancel_keeps_the_part_for_later(fileserver: FileServer, settings: Settings) -> None:
    data = _payload()
    fileserver.add("/slow.gguf", data, delay=0.01)
    variant = _url_variant(fileserver.url + "/slow.gguf")
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= MiB:
            cancel.set()

    with pytest.raises(DownloadError, match="cancelled"):
        download(variant, settings, progress=progress, cancel=cancel)
    cache = Cache(settings)
    assert not cache.is_cached(variant) and cache.partial_path(variant).stat().st_size >= MiB
    assert download(variant, settings).read_bytes() == data


def test_concurrent_downloads_of_one_file_fetch_it_once(fileserver: FileServer, settings: Settings) -> None:
    data = _payload(2 * MiB)
    fileserver.add("/shared.gguf", data, delay=0.005)
    variant = _url_variant(fileserver.url + "/shared.gguf")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(download(variant, settings))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3 and len(set(results)) == 1 and results[0].read_bytes() == data
    assert len(fileserver.gets("/shared.gguf")) == 1


_CHILD = textwrap.dedent(
    """
    import sys
    from lokal.catalog.download import download
    from lokal.catalog.spec import Variant
    from lokal.config import get_settings
    download(Variant(id="direct-cpu:1", url=sys.argv[1]), get_settings())
    """
)


def test_kill_9_mid_download_never_leaves_a_final_file(fileserver: FileServer, settings: Settings) -> None:
    data = _payload(4 * MiB)
    fileserver.add("/big.gguf", data, delay=0.02)  # ~64 chunks * 20 ms: over a second of transfer
    url = fileserver.url + "/big.gguf"
    variant = _url_variant(url)
    cache = Cache(settings)
    part, final = cache.partial_path(variant), cache.path_for(variant)

    child = subprocess.Popen([sys.executable, "-c", _CHILD, url], env={**os.environ})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < MiB):
            assert child.poll() is None, "the downloader finished before it could be killed"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not final.exists() and 0 < part.stat().st_size < len(data)

    path = download(variant, settings)  # the next run resumes what the killed one left
    assert fileserver.gets("/big.gguf")[-1].headers["range"].startswith("bytes=")
    assert path.read_bytes() == data and not part.exists()
