"""What a download must look like before it is published: its length and sha256, from every source that says.

The catalog may give an exact size (`size_exact`), an approximate one (`size_bytes` alone) and a sha256; the
hub gives X-Linked-Size / X-Linked-Etag; any server gives Content-Length or a Content-Range total. A file is
verified when an exact length or a sha256 matched. With only an approximate size it is checked roughly; with
nothing at all it is published, and the caller is told it is unverified rather than left to trust it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lokal.catalog.spec import Variant
from lokal.errors import ChecksumMismatch, DownloadError

CHUNK = 1 << 20
# How far an approximate `size_bytes` may be off. Built-in sizes have three significant digits (< 1 % off);
# hand-written ones are rounder. A file outside this band is short (kept, resumable) or too long (removed).
SIZE_TOLERANCE = 0.10


@dataclass(slots=True)
class Expected:
    exact: int | None = None  # the catalog's size_bytes with size_exact
    approx: int | None = None  # the catalog's size_bytes without size_exact: a sanity bound only
    sha256: str | None = None  # the catalog's sha256
    linked_size: int | None = None  # X-Linked-Size (the hub's LFS size)
    linked_sha256: str | None = None  # X-Linked-Etag, when it is a sha256
    total: int | None = None  # the server's own word for this transfer: Content-Length, Content-Range total

    @classmethod
    def of(cls, variant: Variant) -> Expected:
        if variant.size_exact:
            return cls(exact=variant.size_bytes, sha256=variant.sha256)
        return cls(approx=variant.size_bytes, sha256=variant.sha256)

    @property
    def declared(self) -> int | None:
        """The length the file must have, said before this transfer (catalog or hub)."""
        return self.exact or self.linked_size

    @property
    def want(self) -> int | None:
        """The exact length, when anything knows it."""
        return self.declared or self.total

    @property
    def sha(self) -> str | None:
        return self.sha256 or self.linked_sha256

    def limit(self) -> int | None:
        """The most bytes the file may reach: past this, the transfer stops (a server must not fill the disk)."""
        if self.want is not None:
            return self.want
        return int(self.approx * (1 + SIZE_TOLERANCE)) if self.approx else None

    def too_short(self, size: int) -> bool:
        if self.want is not None:
            return size < self.want
        return bool(self.approx) and size < (self.approx or 0) * (1 - SIZE_TOLERANCE)

    def conflict(self, variant: Variant) -> DownloadError | None:
        """The server's length contradicts the catalog's or the hub's: no byte of it can be right."""
        if self.declared is not None and self.total is not None and self.declared != self.total:
            return DownloadError(
                f"the server says {variant.id} has {self.total} bytes, expected {self.declared} "
                f"({self._source()}): the file changed upstream or the catalog entry is wrong; nothing was kept"
            )
        return None

    def _source(self) -> str:
        return "the catalog (size_bytes, size_exact)" if self.exact else "the hub (X-Linked-Size)"

    def shortfall(self, variant: Variant, size: int, host: str) -> DownloadError:
        """The error for a file that stopped short; its `.part` is kept for the next run to resume."""
        if self.want is not None:
            of = f"{size} of {self.want} bytes"
        else:
            of = (
                f"{size} bytes of about {self.approx} (the catalog's size_bytes; if that is wrong, correct it "
                "or add sha256)"
            )
        return DownloadError(
            f"download of {variant.id} stopped at {of}: {host} closed the connection early; the partial file "
            "is kept, run the command again to resume",
            code="download_incomplete",
        )

    def overrun(self, variant: Variant, size: int) -> DownloadError:
        what = f"{self.want} bytes" if self.want is not None else f"about {self.approx} bytes (size_bytes)"
        return DownloadError(
            f"download of {variant.id} has more than {what} (reached {size}): the file changed upstream or "
            "the catalog entry is wrong; removed it"
        )


def hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h, n


@dataclass(frozen=True, slots=True)
class Verdict:
    verified: bool
    note: str | None = None  # what could not be checked, when verified is False


def verify(part: Path, variant: Variant, expect: Expected, digest: str | None, host: str) -> Verdict:
    """Check the finished `.part`. Short: raises and keeps it (resumable). Too long or corrupt: removes it.

    `digest` is the sha256 hashed while the bytes streamed in (None: hash the file now, if a sha is known).
    """
    size = part.stat().st_size
    want, limit = expect.want, expect.limit()
    if limit is not None and size > limit:
        part.unlink(missing_ok=True)
        raise expect.overrun(variant, size)
    if expect.too_short(size):
        if expect.declared is not None and expect.total == size:  # the server says that is all there is
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"download of {variant.id} has {size} bytes, expected {expect.declared}: the server's file is "
                "shorter than the catalog says; removed it"
            )
        raise expect.shortfall(variant, size, host)
    checks = []
    if want is not None:
        checks.append("size")
    if expect.sha is not None:
        got = digest or hash_file(part)[0].hexdigest()
        if got != expect.sha:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"sha256 of {variant.id} is {got}, expected {expect.sha}: the download is corrupt or the file "
                "changed upstream; removed it - run the download again"
            )
        checks.append("sha256")
    if checks:
        return Verdict(True)
    if expect.approx:
        return Verdict(
            False,
            f"{variant.id} is unverified: {host} sent no length, and the catalog has only an approximate "
            f"size_bytes ({size} bytes received, about {expect.approx} expected) and no sha256; add sha256 (or "
            "size_exact: true) to its catalog entry to verify it",
        )
    return Verdict(
        False,
        f"{variant.id} is unverified: {host} sent no length and its catalog entry has neither size_bytes nor "
        f"sha256, so lokal cannot tell whether all {size} bytes arrived; add sha256 to the entry to verify it",
    )
