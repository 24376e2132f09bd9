"""One collection = one SQLite file (LOKAL_HOME/rag/<name>.sqlite): documents, chunks, vectors, BM25 index.

Every write goes through `transaction()`, and each one bumps a generation counter. The stored BM25 index
carries the generation it was built from, so a reader can tell a stale one (ingest interrupted before the
rebuild) from a fresh one and rebuild it instead of serving wrong scores.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lokal.config import get_settings
from lokal.rag.errors import CollectionNotFound, IndexMismatch, InvalidCollectionName

DEFAULT_COLLECTION = "default"
SCHEMA_VERSION = 1
# Names become file names: no separators, no dot-dot, nothing that could escape LOKAL_HOME/rag.
COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    n_chunks INTEGER NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    headings TEXT NOT NULL,
    location TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS bm25 (name TEXT PRIMARY KEY, data BLOB NOT NULL);
"""


def rag_dir(home: Path | None = None) -> Path:
    return (home or get_settings().home) / "rag"


def check_name(name: str) -> str:
    if not COLLECTION_RE.match(name):
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use letters, digits, '_' and '-' (at most 64)",
            param="collection",
        )
    return name


def collection_path(name: str, home: Path | None = None) -> Path:
    return rag_dir(home) / f"{check_name(name)}.sqlite"


def collection_id(path: Path) -> str:
    """A stable, opaque name for one collection file: equal ids mean the same file, the path stays unsaid."""
    import hashlib

    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def index_text(headings: tuple[str, ...], text: str) -> str:
    """What BM25 and the embedder see: the heading path gives a paragraph the context it lacks alone."""
    return " > ".join(headings) + "\n" + text if headings else text


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    path: str
    kind: str
    sha256: str
    size: int
    mtime: float
    n_chunks: int = 0


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    ordinal: int
    text: str
    headings: tuple[str, ...]
    location: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredChunk:
    id: int
    source: str
    kind: str
    text: str
    headings: tuple[str, ...]
    location: str
    metadata: dict[str, Any]

    @property
    def index_text(self) -> str:
        return index_text(self.headings, self.text)


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    path: Path
    documents: int
    chunks: int
    size_bytes: int
    updated_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "documents": self.documents,
            "chunks": self.chunks,
            "size_bytes": self.size_bytes,
            "updated_at": self.updated_at,
        }


class Index:
    """A collection's SQLite file. Not shared across threads without the caller's own lock."""

    def __init__(self, name: str, path: Path, conn: sqlite3.Connection) -> None:
        self.name = name
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, name: str, home: Path | None = None, *, create: bool = False) -> Index:
        path = collection_path(name, home)
        if not path.exists():
            if not create:
                raise CollectionNotFound(
                    f"collection {name!r} does not exist (ingest documents with: lokal rag ingest PATH "
                    f"--collection {name})",
                    param="collection",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is one all-or-nothing unit.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA foreign_keys = ON")
        # WAL lets the server read a collection while `lokal rag ingest` writes it.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        return cls(name, path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        except BaseException:  # KeyboardInterrupt too: an interrupted batch must leave no trace
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    def check_embedder(self, dim: int) -> None:
        """Record the vector size on first write; refuse to mix vectors of different models later."""
        stored = self._meta("embedding_dim")
        if stored is None:
            self._set_meta("embedding_dim", str(dim))
        elif int(stored) != dim:
            raise IndexMismatch(
                f"collection {self.name!r} holds {stored}-dimensional vectors, the embedder makes {dim}: "
                "re-create the collection"
            )

    def documents(self) -> dict[str, DocumentRecord]:
        rows = self._conn.execute("SELECT path, kind, sha256, size, mtime, n_chunks FROM documents")
        return {r[0]: DocumentRecord(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def replace_document(self, doc: DocumentRecord, chunks: list[ChunkRecord], vectors: np.ndarray) -> None:
        """Call inside `transaction()`. The document's old chunks go; other documents are not touched."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        self._conn.execute("DELETE FROM documents WHERE path = ?", (doc.path,))
        cur = self._conn.execute(
            "INSERT INTO documents (path, kind, sha256, size, mtime, n_chunks, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (doc.path, doc.kind, doc.sha256, doc.size, doc.mtime, len(chunks), time.time()),
        )
        doc_id = cur.lastrowid
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        self._conn.executemany(
            "INSERT INTO chunks "
            '(doc_id, ordinal, text, headings, location, start, "end", metadata, embedding) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    doc_id,
                    c.ordinal,
                    c.text,
                    json.dumps(list(c.headings)),
                    c.location,
                    c.start,
                    c.end,
                    json.dumps(c.metadata),
                    vecs[i].tobytes(),
                )
                for i, c in enumerate(chunks)
            ],
        )

    def delete_document(self, path: str) -> None:
        """Call inside `transaction()`; the chunks go with it (ON DELETE CASCADE)."""
        self._conn.execute("DELETE FROM documents WHERE path = ?", (path,))

    def counts(self) -> tuple[int, int]:
        docs = self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def load_chunks(self) -> tuple[list[StoredChunk], np.ndarray]:
        """All chunks in id order with their vectors as one (n, dim) matrix for brute-force dense search."""
        rows = self._conn.execute(
            "SELECT c.id, d.path, d.kind, c.text, c.headings, c.location, c.metadata, c.embedding "
            "FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.id"
        ).fetchall()
        chunks = [
            StoredChunk(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], json.loads(r[6])) for r in rows
        ]
        dim = int(self._meta("embedding_dim") or 0)
        if not rows:
            return chunks, np.zeros((0, dim), dtype=np.float32)
        vectors = np.frombuffer(b"".join(r[7] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return chunks, vectors

    def save_bm25(self, files: dict[str, bytes], generation: int) -> None:
        """Store a BM25 index built from the chunks as of `generation` (one transaction)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if self.generation() != generation:  # a writer got in between: this index is already stale
                self._conn.execute("ROLLBACK")
                return
            self._conn.execute("DELETE FROM bm25")
            self._conn.executemany("INSERT INTO bm25 VALUES (?, ?)", list(files.items()))
            self._set_meta("bm25_generation", str(generation))
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def load_bm25(self, generation: int) -> dict[str, bytes] | None:
        """The stored BM25 files if they match `generation`, else None (rebuild)."""
        if self._meta("bm25_generation") != str(generation):
            return None
        return {r[0]: bytes(r[1]) for r in self._conn.execute("SELECT name, data FROM bm25")}

    def updated_at(self) -> float | None:
        row = self._conn.execute("SELECT MAX(ingested_at) FROM documents").fetchone()
        return None if row is None or row[0] is None else float(row[0])


def list_collections(home: Path | None = None) -> list[CollectionInfo]:
    out: list[CollectionInfo] = []
    folder = rag_dir(home)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.sqlite")):
        if not COLLECTION_RE.match(path.stem):
            continue
        try:
            with Index.open(path.stem, home) as idx:
                docs, chunks = idx.counts()
                updated = idx.updated_at()
        except sqlite3.DatabaseError:
            continue  # not one of ours (or corrupt): listing must not fail because of it
        out.append(CollectionInfo(path.stem, path, docs, chunks, path.stat().st_size, updated))
    return out


def delete_collection(name: str, home: Path | None = None) -> None:
    path = collection_path(name, home)
    if not path.exists():
        raise CollectionNotFound(f"collection {name!r} does not exist", param="collection")
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
