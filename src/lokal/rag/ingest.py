"""Folder -> collection, incrementally: content hashes decide what is re-chunked, what stays, what goes.

Writes are batched (one embedder call and one transaction per ~256 chunks): a batch lands whole or not at
all, so an interrupted ingest leaves every document either in its old or its new version, never half.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lokal.embeddings import Encoder
from lokal.rag import loaders
from lokal.rag.chunk import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS, chunk
from lokal.rag.index import ChunkRecord, DocumentRecord, Index, index_text
from lokal.rag.retrieve import default_embedder, ensure_bm25

Status = Literal["added", "updated", "unchanged", "deleted", "skipped"]
MAX_FILE_BYTES = 64 * 2**20  # beyond this a "document" is a data dump: refuse rather than stall


@dataclass(frozen=True, slots=True)
class FileResult:
    path: str
    status: Status
    chunks: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "chunks": self.chunks, "reason": self.reason}


@dataclass
class IngestReport:
    collection: str
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def chunks_written(self) -> int:
        return sum(r.chunks for r in self.results if r.status in ("added", "updated"))

    def to_dict(self) -> dict[str, Any]:
        statuses: tuple[Status, ...] = ("added", "updated", "unchanged", "deleted", "skipped")
        return {
            "collection": self.collection,
            "seconds": round(self.seconds, 3),
            "chunks_written": self.chunks_written,
            **{s: self.count(s) for s in statuses},
            "files": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True, slots=True)
class _Pending:
    doc: DocumentRecord
    chunks: list[ChunkRecord]
    status: Status


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path], list[FileResult]]:
    """(files to read, roots they were found under, skip reports). Hidden files and folders are ignored."""
    files: list[Path] = []
    roots: list[Path] = []
    skipped: list[FileResult] = []
    for raw in paths:
        root = Path(raw).expanduser().resolve()
        roots.append(root)
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):  # no symlink loops: followlinks is off
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    path = Path(dirpath) / fname
                    if _hidden(path.relative_to(root)):
                        continue
                    if loaders.supported(path):
                        files.append(path)
                    else:
                        skipped.append(FileResult(str(path), "skipped", reason="unsupported file type"))
        elif root.is_file():
            if loaders.supported(root):
                files.append(root)
            else:
                skipped.append(FileResult(str(root), "skipped", reason="unsupported file type"))
        # a missing path is not an error here: documents once ingested from it are deleted below
    return list(dict.fromkeys(files)), roots, skipped


def _under(path: str, roots: list[Path]) -> bool:
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)


def ingest(
    index: Index,
    paths: Iterable[str | Path],
    *,
    embedder: Encoder | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
    tags: Mapping[str, str] | None = None,
    batch_chunks: int = 256,
    on_total: Callable[[int], None] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
) -> IngestReport:
    """Bring the collection in line with `paths`: new and changed files (re)indexed, missing ones removed."""
    started = time.perf_counter()
    report = IngestReport(index.name)
    files, roots, skipped = discover(paths)
    known = index.documents()
    found = {str(f) for f in files}
    gone = sorted(p for p in known if _under(p, roots) and p not in found)
    missing_roots = [r for r in roots if not r.exists() and not any(_under(p, [r]) for p in known)]
    if on_total:
        on_total(len(files) + len(gone) + len(skipped) + len(missing_roots))

    def done(result: FileResult) -> None:
        report.results.append(result)
        if on_file:
            on_file(result)

    for r in missing_roots:
        done(FileResult(str(r), "skipped", reason="not found"))
    for s in skipped:
        done(s)
    if gone:
        with index.transaction():
            for p in gone:
                index.delete_document(p)
        for p in gone:
            done(FileResult(p, "deleted", chunks=known[p].n_chunks))

    emb: Encoder | None = embedder
    pending: list[_Pending] = []
    changed = bool(gone)

    def flush() -> None:
        nonlocal emb
        if not pending:
            return
        if emb is None:
            emb = default_embedder()
        texts = [index_text(c.headings, c.text) for p in pending for c in p.chunks]
        vectors = emb.encode(texts)
        with index.transaction():
            index.check_embedder(int(vectors.shape[1]) if len(texts) else emb.dim)
            offset = 0
            for p in pending:
                index.replace_document(p.doc, p.chunks, vectors[offset : offset + len(p.chunks)])
                offset += len(p.chunks)
        for p in pending:
            done(FileResult(p.doc.path, p.status, chunks=len(p.chunks)))
        pending.clear()

    for path in files:
        key = str(path)
        try:
            stat = path.stat()
            if stat.st_size > MAX_FILE_BYTES:
                raise loaders.Unreadable(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
            data = path.read_bytes()
        except (OSError, loaders.Unreadable) as exc:
            changed |= _skip(index, known, key, str(getattr(exc, "strerror", None) or exc), done)
            continue
        sha = hashlib.sha256(data).hexdigest()
        if key in known and known[key].sha256 == sha:
            done(FileResult(key, "unchanged", chunks=known[key].n_chunks))
            continue
        try:
            parsed = loaders.load(path, data)
        except loaders.Unreadable as exc:
            changed |= _skip(index, known, key, str(exc), done)
            continue
        pieces = chunk(parsed, max_chars=max_chars, overlap_chars=overlap_chars)
        meta: dict[str, Any] = {**(tags or {}), "kind": parsed.kind}
        records = [
            ChunkRecord(i, c.text, c.headings, c.location, c.start, c.end, meta) for i, c in enumerate(pieces)
        ]
        doc = DocumentRecord(key, parsed.kind, sha, stat.st_size, stat.st_mtime, len(records))
        pending.append(_Pending(doc, records, "updated" if key in known else "added"))
        changed = True
        if sum(len(p.chunks) for p in pending) >= batch_chunks:
            flush()
    flush()
    if changed:
        ensure_bm25(index)  # rebuilt once per ingest rather than once per batch
    report.seconds = time.perf_counter() - started
    return report


def _skip(
    index: Index,
    known: Mapping[str, DocumentRecord],
    key: str,
    reason: str,
    done: Callable[[FileResult], None],
) -> bool:
    """Report a file we cannot read; if an older readable version was indexed, its chunks are now wrong."""
    if key in known:
        with index.transaction():
            index.delete_document(key)
        done(FileResult(key, "skipped", reason=f"{reason}; its previous version was removed"))
        return True
    done(FileResult(key, "skipped", reason=reason))
    return False
