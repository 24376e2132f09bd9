"""Fetch a variant's artifact into the cache: resumable, size- and sha256-checked, atomic.

Bytes stream into `<final>.part`; a later call resumes from its size with an HTTP Range request. Only a
complete, checked file (integrity.py) is fsynced and renamed to the final path, so a kill -9 at any moment
leaves either no file or a `.part` that the next download continues. A server that stops sending for the read
timeout ends the download with an error that keeps the `.part`.

A folder variant (ONNX GenAI: `file` is a folder of the repo) is listed with the hub's tree API (hub_tree.py)
and each listed file fetched the same way into `<folder>.part/`, checked against the size and sha256 the
listing gives; the manifest (cache.MANIFEST) is written last and the folder renamed into place. `fetch_parts`
is the one loop for several files (a folder here, a web variant's files in lokal.web.pull).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
from filelock import FileLock, Timeout

from lokal.catalog.cache import LOCK_SUFFIX, MANIFEST, PART_SUFFIX, Cache
from lokal.catalog.durable import atomic_write_text, fsync_dir
from lokal.catalog.hub_tree import RemoteFile, list_folder
from lokal.catalog.integrity import Expected, hash_file, verify
from lokal.catalog.spec import Variant
from lokal.config import Settings, env_value, get_settings
from lokal.errors import DownloadError, LokalError, ModelNotDownloaded

log = logging.getLogger("lokal.catalog.download")

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None when unknown)
Warn = Callable[[str], None]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
BYO_HINT = "bring your own GGUF instead with `lokal model add PATH --alias NAME`"


def source_url(variant: Variant, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if variant.url:
        return variant.url
    if variant.repo and variant.is_folder:  # the folder's page on the hub; its files are listed at download
        hub = settings.hf_endpoint.rstrip("/")
        return f"{hub}/{variant.repo}/tree/{variant.revision}" + (f"/{variant.file}" if variant.file else "")
    if variant.repo and variant.file:
        return _hub_file_url(variant.repo, variant.file, variant.revision, settings)
    raise DownloadError(f"variant {variant.id!r} has neither `url` nor `repo` + `file`: nothing to download")


def _hub_file_url(repo: str, file: str, revision: str, settings: Settings) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo, file, revision=revision, endpoint=settings.hf_endpoint.rstrip("/"))


def _hub_token(url: str, settings: Settings, token: str | None) -> str | None:
    if token:
        return token
    # The hub token goes only to the hub, never to an arbitrary `url:` from a catalog entry.
    if urlsplit(url).netloc != urlsplit(settings.hf_endpoint).netloc:
        return None
    env = env_value("HF_TOKEN") or env_value("HUGGING_FACE_HUB_TOKEN")
    if env:
        return env
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()


@dataclass(frozen=True, slots=True)
class Downloaded:
    """What `fetch` made present, and how far its bytes were checked."""

    path: Path
    verified: bool  # an exact size or a sha256 matched (or the file was already there: nothing to check)
    note: str | None = None  # when verified is False: what could not be checked, for the user to read
    transferred: bool = False  # bytes moved in this call


def _header_hints(resp: httpx.Response, expect: Expected) -> None:
    """Hugging Face puts the LFS file's sha256 and size on its redirect as X-Linked-Etag / X-Linked-Size."""
    for r in [*resp.history, resp]:
        etag = r.headers.get("x-linked-etag")
        if etag:
            etag = etag.removeprefix("W/").strip('"').lower()
            if _SHA256_RE.match(etag):
                expect.linked_sha256 = etag
        size = r.headers.get("x-linked-size")
        if size and size.isdigit():
            expect.linked_size = int(size)


class _Restart(Exception):
    """The server's answer does not continue our `.part`: start over from byte 0."""


class _Short(Exception):
    """The body ended before the file did (e.g. a close-delimited body cut off): resume like a dropped line."""


class _Overrun(Exception):
    """The server sent more than the file may have."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


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


def _length(resp: httpx.Response) -> int | None:
    """The body's length on the wire, when the server says (with an encoding it is not the file's length)."""
    length = resp.headers.get("content-length")
    return int(length) if length and length.isdigit() and "content-encoding" not in resp.headers else None


class _Transfer:
    def __init__(
        self,
        client: httpx.Client,
        url: str,
        headers: dict[str, str],
        part: Path,
        expect: Expected,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> None:
        self.client, self.url, self.headers, self.part = client, url, headers, part
        self.expect = expect
        self.progress, self.cancel = progress, cancel
        self.hasher: hashlib._Hash | None = None
        self.hashed = 0
        self.transferred = False

    def _sync_hasher(self, offset: int) -> None:
        if self.hasher is None or self.hashed != offset:
            if offset:
                self.hasher, self.hashed = hash_file(self.part)
            else:
                self.hasher, self.hashed = hashlib.sha256(), 0

    def digest(self) -> str | None:
        size = self.part.stat().st_size
        return self.hasher.hexdigest() if self.hasher is not None and self.hashed == size else None

    def attempt(self, variant: Variant) -> None:
        """One request; returns once the `.part` holds every byte the server has. Raises to retry."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self.client.stream("GET", self.url, headers=headers) as resp:
            _header_hints(resp, self.expect)
            if resp.status_code == 416:
                total = resp.headers.get("content-range", "").rpartition("/")[2]
                if offset and total.isdigit() and int(total) == offset:
                    self.expect.total = offset
                    return  # the .part already holds every byte
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
                total = _length(resp)
                mode = "wb"
            if total is not None:
                self.expect.total = total
            conflict = self.expect.conflict(variant)
            if conflict is not None:
                raise conflict
            self._sync_hasher(offset)
            with self.part.open(mode) as fh:
                done = self._copy(resp, fh, offset)
                fh.flush()
                os.fsync(fh.fileno())
            self.transferred = True
            length = _length(resp)
            if length is not None and resp.num_bytes_downloaded < length:
                raise _Short  # the body ended before its own Content-Length
        if self.expect.too_short(done):
            raise _Short

    def _copy(self, resp: httpx.Response, fh: IO[bytes], done: int) -> int:
        assert self.hasher is not None
        total = self.expect.want
        limit = self.expect.limit()
        if self.progress:
            self.progress(done, total)
        # Each piece as it arrives (not gathered into big chunks): what came before a stall is on disk.
        for chunk in resp.iter_bytes():
            if self.cancel is not None and self.cancel.is_set():
                fh.flush()
                raise DownloadError("download cancelled; run it again to resume", code="download_cancelled")
            if limit is not None and done + len(chunk) > limit:
                raise _Overrun(done + len(chunk))
            fh.write(chunk)
            self.hasher.update(chunk)
            done += len(chunk)
            self.hashed = done
            if self.progress:
                self.progress(done, total)
        return done


def download(
    variant: Variant,
    settings: Settings | None = None,
    *,
    token: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    client: httpx.Client | None = None,
    max_retries: int = 3,
    timeout: float | None = None,
) -> Path:
    """`fetch`, returning only the path; a download that could not be verified is logged as a warning."""
    return fetch(
        variant,
        settings,
        token=token,
        progress=progress,
        cancel=cancel,
        client=client,
        max_retries=max_retries,
        timeout=timeout,
    ).path


def fetch(
    variant: Variant,
    settings: Settings | None = None,
    *,
    token: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    client: httpx.Client | None = None,
    max_retries: int = 3,
    timeout: float | None = None,
    warn: Warn | None = None,
) -> Downloaded:
    """Make the variant's artifact present in the cache; say where, and whether its bytes were verified.

    Retries interrupted transfers (resuming, up to `max_retries` times without progress); connection
    failures and stalls are reported at once, since a hub that cannot be reached (or has stopped sending)
    will not appear by retrying. `timeout` is the read timeout (default: settings.download_read_timeout).
    `warn` hears about a download that could not be verified (default: a log warning).
    """
    settings = settings or get_settings()
    cache = Cache(settings)
    if not variant.needs_artifact:
        raise DownloadError(f"variant {variant.id!r} is served by an upstream API: there is nothing to download")
    if variant.path:
        path = Path(variant.path).expanduser()
        if path.exists():
            return Downloaded(path, verified=True)
        raise ModelNotDownloaded(
            f"variant {variant.id!r} points at {path}, which does not exist; lokal cannot download a file "
            "you brought yourself - restore it or run `lokal model add` again"
        )
    opts = FetchOptions(token, progress, cancel, client, max_retries, timeout, warn)
    if variant.is_folder:
        return _fetch_folder(variant, settings, cache.managed_path(variant), opts)
    return fetch_file(variant, cache.managed_path(variant), settings, opts)


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """`fetch`'s keyword arguments, handed on to each file of a multi-file download."""

    token: str | None = None
    progress: Progress | None = None
    cancel: threading.Event | None = None
    client: httpx.Client | None = None
    max_retries: int = 3
    timeout: float | None = None
    warn: Warn | None = None
    lock: bool = True  # False: the caller holds a lock that covers this file (its folder's)


def _client(settings: Settings, timeout: float | None) -> httpx.Client:
    read_timeout = settings.download_read_timeout if timeout is None else timeout
    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(read_timeout, connect=10.0))


def fetch_file(variant: Variant, final: Path, settings: Settings, opts: FetchOptions | None = None) -> Downloaded:
    """The one-file downloader: the variant's `url` or `repo` + `file` into `final` (resume, size + sha256,
    lock, atomic rename, cancel, progress)."""
    opts = opts or FetchOptions()
    if final.exists():
        if opts.progress:
            size = final.stat().st_size
            opts.progress(size, size)
        return Downloaded(final, verified=True)
    url = source_url(variant, settings)
    if settings.offline:
        raise DownloadError(f"offline mode (LOKAL_OFFLINE) forbids downloading {variant.id}; {BYO_HINT}")

    final.parent.mkdir(parents=True, exist_ok=True)
    # One downloader per file across threads and processes (CLI and server may both be asked).
    with _file_lock(final, opts.cancel) if opts.lock else nullcontext():
        if final.exists():
            return Downloaded(final, verified=True)
        http = opts.client or _client(settings, opts.timeout)
        try:
            result = _fetch(
                http, url, variant, settings, final, opts.token, opts.progress, opts.cancel, opts.max_retries
            )
        finally:
            if opts.client is None:
                http.close()
    if result.note:
        (opts.warn or log.warning)(result.note)
    return result


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a multi-file download: `variant` says where its bytes come from and what they must be
    (size_bytes, size_exact, sha256); `dest` is where it lands; `label` names it in errors."""

    variant: Variant
    dest: Path
    label: str


def fetch_parts(parts: Sequence[Part], settings: Settings, opts: FetchOptions | None = None) -> list[Downloaded]:
    """Each part through `fetch_file`, one after another on one connection pool. `opts.progress` hears the
    bytes of all parts together (the total once every part's length is known); an error names its part."""
    opts = opts or FetchOptions()
    sizes: list[int | None] = [p.variant.size_bytes for p in parts]
    finished = 0
    http = opts.client or _client(settings, opts.timeout)
    results: list[Downloaded] = []
    try:
        for i, part in enumerate(parts):
            if opts.cancel is not None and opts.cancel.is_set():
                raise DownloadError("download cancelled; run it again to resume", code="download_cancelled")
            report = None if opts.progress is None else _overall(opts.progress, sizes, i, finished)
            try:
                result = fetch_file(part.variant, part.dest, settings, replace(opts, progress=report, client=http))
            except LokalError as exc:
                exc.message = f"{part.label}: {exc.message}"
                exc.args = (exc.message,)
                raise
            sizes[i] = result.path.stat().st_size
            finished += sizes[i] or 0
            results.append(result)
    finally:
        if opts.client is None:
            http.close()
    return results


def _overall(progress: Progress, sizes: list[int | None], i: int, before: int) -> Progress:
    """Part i's progress as progress of the whole: `before` bytes of the earlier parts are done."""

    def report(done: int, total: int | None) -> None:
        if total is not None:
            sizes[i] = total
        known = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        progress(before + done, known)

    return report


def _auth_headers(settings: Settings, token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "lokal", "Accept": "application/json"}
    bearer = _hub_token(settings.hf_endpoint, settings, token)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    return headers


def _one_file(variant: Variant, remote: RemoteFile, settings: Settings) -> Variant:
    # A copy, not a new Variant: the folder variant was validated, and the listing's names were checked. Its
    # `url` is the file's resolve URL: as a folder variant it would otherwise name the folder.
    assert variant.repo is not None
    return variant.model_copy(
        update={
            "file": remote.path,
            "url": _hub_file_url(variant.repo, remote.path, variant.revision, settings),
            "size_bytes": remote.size,
            "size_exact": remote.size is not None,
            "sha256": remote.sha256,
        }
    )


def _fetch_folder(variant: Variant, settings: Settings, final: Path, opts: FetchOptions) -> Downloaded:
    where = f"{variant.repo}/{variant.file}" if variant.file else str(variant.repo)
    manifest = final / MANIFEST
    if manifest.is_file():
        if opts.progress:
            size = _manifest_bytes(manifest)
            opts.progress(size, size)
        return Downloaded(final, verified=True)
    if not variant.repo:
        raise DownloadError(
            f"variant {variant.id!r} is a folder (engine {variant.engine}): it needs `repo` (and `file`, the folder "
            "in it) so the hub can list its files; `url` can name one file only"
        )
    if settings.offline:
        raise DownloadError(f"offline mode (LOKAL_OFFLINE) forbids downloading {variant.id}; {BYO_HINT}")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(final.name + PART_SUFFIX)
    with _file_lock(final, opts.cancel):  # one downloader per folder; its files need no lock of their own
        if manifest.is_file():
            return Downloaded(final, verified=True)
        http = opts.client or _client(settings, opts.timeout)
        try:
            listing = list_folder(http, variant, settings.hf_endpoint, _auth_headers(settings, opts.token))
            parts = [Part(_one_file(variant, f, settings), staging / f.rel, f"{where}: file {f.rel}") for f in listing]
            for part, remote in zip(parts, listing, strict=True):
                # A file kept from an earlier run that no longer matches the listing (changed upstream): again.
                if part.dest.is_file() and remote.size is not None and part.dest.stat().st_size != remote.size:
                    part.dest.unlink()
            notes: list[str] = []  # said once for the folder, below
            results = fetch_parts(parts, settings, replace(opts, client=http, warn=notes.append, lock=False))
        finally:
            if opts.client is None:
                http.close()
        record = {
            "repo": variant.repo,
            "revision": variant.revision,
            "folder": variant.file or "",
            "files": [
                {"path": f.rel, "size": r.path.stat().st_size, "sha256": f.sha256, "verified": r.verified}
                for f, r in zip(listing, results, strict=True)
            ],
        }
        atomic_write_text(staging / MANIFEST, json.dumps(record, indent=1) + "\n")
        if final.exists():  # a folder without a manifest was never complete (a crash between rename steps)
            shutil.rmtree(final)
        os.replace(staging, final)
        fsync_dir(final.parent)
    verified = all(r.verified for r in results)
    note = "; ".join(notes) if notes else None
    if note:
        (opts.warn or log.warning)(note)
    return Downloaded(final, verified, note, transferred=any(r.transferred for r in results))


def _manifest_bytes(manifest: Path) -> int:
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
        return sum(int(f.get("size") or 0) for f in files)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


@contextmanager
def _file_lock(final: Path, cancel: threading.Event | None) -> Iterator[None]:
    """The per-file lock, waited for in short steps so that a cancelled download stops waiting too."""
    lock = FileLock(str(final) + LOCK_SUFFIX)
    while True:
        try:
            lock.acquire(timeout=0.25)
            break
        except Timeout:
            if cancel is not None and cancel.is_set():
                raise DownloadError(
                    "download cancelled while another download of the same file ran", code="download_cancelled"
                ) from None
    try:
        yield
    finally:
        lock.release()


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
) -> Downloaded:
    part = final.with_name(final.name + PART_SUFFIX)
    headers = {"User-Agent": "lokal", "Accept-Encoding": "identity"}
    bearer = _hub_token(url, settings, token)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    transfer = _Transfer(http, url, headers, part, Expected.of(variant), progress, cancel)
    host = urlsplit(url).netloc or url

    def kept() -> int:
        return part.stat().st_size if part.exists() else 0

    failures = 0
    while True:
        before = kept()
        try:
            transfer.attempt(variant)
            break
        except _Restart:
            part.unlink(missing_ok=True)
            transfer.hasher = None
            failures += 1
        except _Overrun as exc:
            part.unlink(missing_ok=True)
            raise transfer.expect.overrun(variant, exc.size) from None
        except DownloadError:
            if transfer.expect.conflict(variant) is not None:  # no byte of this file can be right
                part.unlink(missing_ok=True)
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise DownloadError(
                f"cannot reach the model hub at {host} to download {variant.id} "
                f"({exc or type(exc).__name__}); check your connection or LOKAL_HF_ENDPOINT, or {BYO_HINT}"
            ) from exc
        except httpx.ReadTimeout as exc:  # the server stopped sending: retrying would only wait again
            seconds = f"{http.timeout.read:g} s" if http.timeout.read else "too long"
            raise DownloadError(
                f"no data for {seconds} from {host}; the partial file is kept ({kept()} bytes of "
                f"{variant.id}), run the command again to resume",
                code="download_stalled",
            ) from exc
        except (httpx.TransportError, _Short) as exc:  # dropped mid-transfer, cut body, 5xx: resume the .part
            failures = 0 if kept() > before else failures + 1
            if failures > max_retries:
                if isinstance(exc, _Short):
                    raise transfer.expect.shortfall(variant, kept(), host) from None
                raise DownloadError(
                    f"download of {variant.id} kept failing ({exc or type(exc).__name__}); "
                    f"{kept()} bytes are kept in {part.name} and the next attempt resumes from there"
                ) from exc
        if failures > max_retries:
            raise DownloadError(f"download of {variant.id} failed: the server does not return the file consistently")
        time.sleep(min(0.2 * 2**failures, 5.0))

    verdict = verify(part, variant, transfer.expect, transfer.digest(), host)
    os.replace(part, final)
    fsync_dir(final.parent)
    return Downloaded(final, verdict.verified, verdict.note, transferred=transfer.transferred)
