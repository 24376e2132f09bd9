"""Fetch a variant's artifact into the cache: resumable, size- and sha256-checked, atomic.

Bytes stream into `<final>.part`; a later call resumes from its size with an HTTP Range request. Only a
complete, verified file is fsynced and renamed to the final path, so a kill -9 at any moment leaves either
no file or a `.part` that the next download continues.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
from filelock import FileLock

from lokal.catalog.cache import LOCK_SUFFIX, PART_SUFFIX, Cache
from lokal.catalog.durable import fsync_dir
from lokal.catalog.spec import Variant
from lokal.config import Settings, get_settings
from lokal.errors import ChecksumMismatch, DownloadError, ModelNotDownloaded

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None when unknown)

CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
BYO_HINT = "bring your own GGUF instead with `lokal model add PATH --alias NAME`"


def source_url(variant: Variant, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if variant.url:
        return variant.url
    if variant.repo and variant.file:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(
            variant.repo, variant.file, revision=variant.revision, endpoint=settings.hf_endpoint.rstrip("/")
        )
    raise DownloadError(f"variant {variant.id!r} has neither `url` nor `repo` + `file`: nothing to download")


def _hub_token(url: str, settings: Settings, token: str | None) -> str | None:
    if token:
        return token
    # The hub token goes only to the hub, never to an arbitrary `url:` from a catalog entry.
    if urlsplit(url).netloc != urlsplit(settings.hf_endpoint).netloc:
        return None
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if env:
        return env
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()


@dataclass(slots=True)
class _Expect:
    size: int | None = None
    sha256: str | None = None


def _header_hints(resp: httpx.Response) -> _Expect:
    """Hugging Face puts the LFS file's sha256 and size on its redirect as X-Linked-Etag / X-Linked-Size."""
    hints = _Expect()
    for r in [*resp.history, resp]:
        etag = r.headers.get("x-linked-etag")
        if etag:
            etag = etag.removeprefix("W/").strip('"').lower()
            if _SHA256_RE.match(etag):
                hints.sha256 = etag
        size = r.headers.get("x-linked-size")
        if size and size.isdigit():
            hints.size = int(size)
    return hints


class _Restart(Exception):
    """The server's answer does not continue our `.part`: start over from byte 0."""


def _http_error(resp: httpx.Response, variant: Variant, url: str) -> DownloadError:
    status = resp.status_code
    where = f"{variant.repo}/{variant.file}" if variant.repo else url
    if status == 401:
        return DownloadError(
            f"the hub refused {where} (HTTP 401): it needs authentication - set HF_TOKEN to a Hugging Face "
            f"token, or {BYO_HINT}"
        )
    if status == 403:
        return DownloadError(
            f"access to {where} is forbidden (HTTP 403): the repo is probably gated - accept its license on "
            f"the model page, then set HF_TOKEN to a token of that account"
        )
    if status == 404:
        return DownloadError(
            f"{where} was not found (HTTP 404) at {url}: check repo, file and revision in the catalog entry"
        )
    return DownloadError(f"download of {where} failed: HTTP {status} from {url}")


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h, n


class _Transfer:
    def __init__(
        self,
        client: httpx.Client,
        url: str,
        headers: dict[str, str],
        part: Path,
        expect: _Expect,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> None:
        self.client, self.url, self.headers, self.part = client, url, headers, part
        self.expect = expect
        self.progress, self.cancel = progress, cancel
        self.hasher: hashlib._Hash | None = None
        self.hashed = 0
        self.server = _Expect()

    def _sync_hasher(self, offset: int) -> None:
        if self.hasher is None or self.hashed != offset:
            if offset:
                self.hasher, self.hashed = _hash_file(self.part)
            else:
                self.hasher, self.hashed = hashlib.sha256(), 0

    def attempt(self, variant: Variant) -> bool:
        """One request; returns True once the `.part` holds the whole file. Raises httpx errors to retry."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self.client.stream("GET", self.url, headers=headers) as resp:
            hints = _header_hints(resp)
            self.server.sha256 = hints.sha256 or self.server.sha256
            self.server.size = hints.size or self.server.size
            if resp.status_code == 416:
                total = resp.headers.get("content-range", "").rpartition("/")[2]
                if offset and total.isdigit() and int(total) == offset:
                    return True  # the .part already holds every byte
                raise _Restart
            if resp.status_code >= 500:  # the hub's CDN has bad moments: retry like a dropped connection
                raise httpx.RemoteProtocolError(f"HTTP {resp.status_code}", request=resp.request)
            if resp.status_code >= 400:
                raise _http_error(resp, variant, self.url)
            if resp.status_code == 206:
                m = _CONTENT_RANGE_RE.match(resp.headers.get("content-range", ""))
                if not m or int(m.group(1)) != offset:
                    raise _Restart
                total = int(m.group(3)) if m.group(3).isdigit() else None
                mode = "ab"
            else:  # 200: the server sent the whole file (it ignored or lacks Range support)
                offset = 0
                length = resp.headers.get("content-length")
                total = (
                    int(length)
                    if length and length.isdigit() and "content-encoding" not in resp.headers
                    else None
                )
                mode = "wb"
            total = self.expect.size or self.server.size or total
            self._sync_hasher(offset)
            with self.part.open(mode) as fh:
                self._copy(resp, fh, offset, total)
                fh.flush()
                os.fsync(fh.fileno())
        return True

    def _copy(self, resp: httpx.Response, fh: IO[bytes], done: int, total: int | None) -> None:
        assert self.hasher is not None
        if self.progress:
            self.progress(done, total)
        for chunk in resp.iter_bytes(CHUNK):
            if self.cancel is not None and self.cancel.is_set():
                fh.flush()
                raise DownloadError("download cancelled; run it again to resume", code="download_cancelled")
            fh.write(chunk)
            self.hasher.update(chunk)
            done += len(chunk)
            self.hashed = done
            if self.progress:
                self.progress(done, total)


def download(
    variant: Variant,
    settings: Settings | None = None,
    *,
    token: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    client: httpx.Client | None = None,
    max_retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Make the variant's artifact present in the cache and return its path.

    Retries interrupted transfers (resuming, up to `max_retries` times without progress); connection
    failures are reported at once, since a hub that cannot be reached will not appear by retrying.
    """
    settings = settings or get_settings()
    cache = Cache(settings)
    if variant.engine == "remote":
        raise DownloadError(f"variant {variant.id!r} runs on a remote server: there is nothing to download")
    if variant.path:
        path = Path(variant.path).expanduser()
        if path.exists():
            return path
        raise ModelNotDownloaded(
            f"variant {variant.id!r} points at {path}, which does not exist; lokal cannot download a file "
            "you brought yourself - restore it or run `lokal model add` again"
        )
    final = cache.managed_path(variant)
    if final.exists():
        if progress:
            size = final.stat().st_size
            progress(size, size)
        return final
    url = source_url(variant, settings)
    if settings.offline:
        raise DownloadError(f"offline mode (LOKAL_OFFLINE) forbids downloading {variant.id}; {BYO_HINT}")

    final.parent.mkdir(parents=True, exist_ok=True)
    # One downloader per file across threads and processes (CLI and server may both be asked).
    with FileLock(str(final) + LOCK_SUFFIX):
        if final.exists():
            return final
        own_client = client is None
        http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout, connect=10.0))
        try:
            _fetch(http, url, variant, settings, final, token, progress, cancel, max_retries)
        finally:
            if own_client:
                http.close()
    return final


def _fetch(
    http: httpx.Client,
    url: str,
    variant: Variant,
    settings: Settings,
    final: Path,
    token: str | None,
    progress: Progress | None,
    cancel: threading.Event | None,
    max_retries: int,
) -> None:
    part = final.with_name(final.name + PART_SUFFIX)
    headers = {"User-Agent": "lokal", "Accept-Encoding": "identity"}
    bearer = _hub_token(url, settings, token)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    expect = _Expect(size=variant.size_bytes if variant.size_exact else None, sha256=variant.sha256)
    transfer = _Transfer(http, url, headers, part, expect, progress, cancel)

    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            transfer.attempt(variant)
            break
        except _Restart:
            part.unlink(missing_ok=True)
            transfer.hasher = None
            failures += 1
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            host = urlsplit(url).netloc or url
            raise DownloadError(
                f"cannot reach the model hub at {host} to download {variant.id} "
                f"({exc or type(exc).__name__}); check your connection or LOKAL_HF_ENDPOINT, or {BYO_HINT}"
            ) from exc
        except httpx.TransportError as exc:  # dropped mid-transfer, read timeout, 5xx: resume from the .part
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > max_retries:
                raise DownloadError(
                    f"download of {variant.id} kept failing ({exc or type(exc).__name__}); "
                    f"{after} bytes are kept in {part.name} and the next attempt resumes from there"
                ) from exc
        if failures > max_retries:
            raise DownloadError(
                f"download of {variant.id} failed: the server does not return the file consistently"
            )
        time.sleep(min(0.2 * 2**failures, 5.0))

    _verify_and_publish(part, final, variant, transfer)


def _verify_and_publish(part: Path, final: Path, variant: Variant, transfer: _Transfer) -> None:
    size = part.stat().st_size
    want_size = transfer.expect.size or transfer.server.size
    if want_size is not None and size != want_size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {variant.id} has {size} bytes, expected {want_size}; removed it")
    want_sha = transfer.expect.sha256 or transfer.server.sha256
    if want_sha is not None:
        if transfer.hasher is None or transfer.hashed != size:
            transfer.hasher, transfer.hashed = _hash_file(part)
        got = transfer.hasher.hexdigest()
        if got != want_sha:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"sha256 of {variant.id} is {got}, expected {want_sha}: the download is corrupt or the file "
                "changed upstream; removed it - run the download again"
            )
    os.replace(part, final)
    fsync_dir(final.parent)
