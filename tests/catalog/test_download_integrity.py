"""Downloads that end early, run long, stall, or come with nothing to check them by (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest
import yaml

from lokal.catalog.cache import Cache
from lokal.catalog.download import download, fetch
from lokal.catalog.spec import Variant
from lokal.config import Settings, get_settings
from lokal.errors import DownloadError
from tests.catalog.fileserver import FileServer

MiB = 1 << 20


def _variant(url: str, **kw: object) -> Variant:
    return Variant.model_validate({"id": "direct-cpu:1", "url": url, **kw})


def _state(settings: Settings, variant: Variant) -> tuple[bool, int | None]:
    """(published?, bytes in the .part or None when there is none)"""
    cache = Cache(settings)
    part = cache.partial_path(variant)
    return cache.is_cached(variant), part.stat().st_size if part.exists() else None


def test_close_delimited_body_cut_short_is_kept_for_resume_not_published(
    fileserver: FileServer, settings: Settings
) -> None:
    # The case: no Content-Length, the connection closes half-way, the entry has size_bytes.
    data = os.urandom(2 * MiB)
    served = fileserver.add("/cut.gguf", data, length=False, range_ok=False, cut=MiB)
    variant = _variant(fileserver.url + "/cut.gguf", size_bytes=len(data))
    with pytest.raises(DownloadError) as err:
        fetch(variant, settings, max_retries=0)
    assert err.value.code == "download_incomplete"
    assert f"stopped at {MiB} bytes of about {len(data)}" in err.value.message and "resume" in err.value.message
    assert _state(settings, variant) == (False, MiB)

    served.cut, served.range_ok = None, True  # the server is well again: the next run resumes the .part
    result = fetch(variant, settings)
    last = fileserver.gets("/cut.gguf")[-1]
    assert last.headers["range"] == f"bytes={MiB}-" and last.status == 206
    assert result.path.read_bytes() == data and result.verified  # the Content-Range total is exact
    assert _state(settings, variant) == (True, None)


def test_exact_size_or_sha_catches_a_cut_close_delimited_body(fileserver: FileServer, settings: Settings) -> None:
    data = os.urandom(MiB)
    fileserver.add("/cut.gguf", data, length=False, range_ok=False, cut=MiB // 2)
    sha = hashlib.sha256(data).hexdigest()
    for extra in ({"size_bytes": len(data), "size_exact": True}, {"sha256": sha}):
        variant = _variant(fileserver.url + "/cut.gguf", **extra)
        with pytest.raises(DownloadError):
            fetch(variant, settings, max_retries=0)
        assert not Cache(settings).is_cached(variant)
        Cache(settings).remove(variant)


def test_body_cut_short_of_its_content_length_is_not_published(fileserver: FileServer, settings: Settings) -> None:
    data = os.urandom(MiB)
    fileserver.add("/short.gguf", data, range_ok=False, cut=MiB // 4)  # Content-Length says 1 MiB every time
    variant = _variant(fileserver.url + "/short.gguf")  # nothing in the catalog: only the header knows
    with pytest.raises(DownloadError, match="kept"):
        fetch(variant, settings, max_retries=0)
    published, kept = _state(settings, variant)
    assert not published and kept is not None and kept <= MiB // 4


def test_nothing_to_check_against_is_published_but_said_plainly(
    fileserver: FileServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(MiB)
    fileserver.add("/bare.gguf", data, length=False, range_ok=False)
    variant = _variant(fileserver.url + "/bare.gguf")
    notes: list[str] = []
    result = fetch(variant, settings, warn=notes.append)
    assert result.path.read_bytes() == data and result.transferred
    assert result.verified is False and result.note and "unverified" in result.note and "sha256" in result.note
    assert notes == [result.note]
    # the path-only API says it through the log
    Cache(settings).remove(variant)
    with caplog.at_level(logging.WARNING, logger="lokal.catalog.download"):
        assert download(variant, settings).read_bytes() == data
    assert any("unverified" in r.getMessage() for r in caplog.records)
    # once cached, nothing more is transferred or claimed
    assert fetch(variant, settings).transferred is False


def test_content_length_alone_verifies_the_size(fileserver: FileServer, settings: Settings) -> None:
    data = os.urandom(MiB)
    fileserver.add("/sized.gguf", data)
    result = fetch(_variant(fileserver.url + "/sized.gguf"), settings)
    assert result.verified and result.note is None


def test_body_longer_than_size_bytes_is_stopped_and_removed(fileserver: FileServer, settings: Settings) -> None:
    fileserver.add("/long.gguf", os.urandom(4 * MiB), length=False, range_ok=False, delay=0.005)
    variant = _variant(fileserver.url + "/long.gguf", size_bytes=MiB)  # approximate: 10 % over is the limit
    with pytest.raises(DownloadError, match=r"more than about 1048576 bytes"):
        fetch(variant, settings)
    assert _state(settings, variant) == (False, None)


def test_server_length_contradicting_an_exact_size_keeps_nothing(fileserver: FileServer, settings: Settings) -> None:
    fileserver.add("/other.gguf", os.urandom(2 * MiB))
    variant = _variant(fileserver.url + "/other.gguf", size_bytes=MiB, size_exact=True)
    with pytest.raises(DownloadError, match=f"has {2 * MiB} bytes, expected {MiB}"):
        fetch(variant, settings)
    assert _state(settings, variant) == (False, None) and len(fileserver.gets("/other.gguf")) == 1


@pytest.mark.serial  # gives up within 2 s of a stall
def test_stalled_server_times_out_with_a_clear_error(
    fileserver: FileServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOKAL_DOWNLOAD_READ_TIMEOUT", "0.5")
    get_settings.cache_clear()
    settings = get_settings()
    fileserver.add("/stall.gguf", os.urandom(2 * MiB), stall_after=256 * 1024)
    variant = _variant(fileserver.url + "/stall.gguf")
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(variant, settings)
    took = time.monotonic() - t0
    host = fileserver.url.removeprefix("http://")
    assert err.value.code == "download_stalled"
    assert f"no data for 0.5 s from {host}; the partial file is kept" in err.value.message
    assert "run the command again to resume" in err.value.message
    assert took < 0.5 + 1.5, f"gave up after {took:.1f} s"
    assert _state(settings, variant) == (False, 256 * 1024)  # what arrived before the stall is on disk


def test_cli_download_prints_the_unverified_note(fileserver: FileServer, home: Path) -> None:
    from typer.testing import CliRunner

    from lokal.cli import model as model_cli

    fileserver.add("/bare.gguf", os.urandom(64 * 1024), length=False, range_ok=False)
    home.mkdir()
    entry = {"alias": "bare", "variants": [{"id": "bare-cpu:1", "url": fileserver.url + "/bare.gguf"}]}
    (home / "catalog.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    result = CliRunner().invoke(model_cli.app, ["download", "bare"])
    assert result.exit_code == 0, result.output
    assert "downloaded bare" in result.output and "verified: false" in result.output
    assert "unverified" in result.output
