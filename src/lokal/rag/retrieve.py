"""Ranking chunks for a question: BM25 (bm25s), dense cosine (MiniLM), and both fused by reciprocal rank.

All chunks and vectors of a collection are held in memory: 10k chunks x 384 floats is 15 MB, and a brute
force matrix-vector product over them takes about a millisecond, less than any vector index would save.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from lokal.config import get_settings
from lokal.embeddings import Encoder
from lokal.embeddings.query import one_torch_thread
from lokal.rag.errors import EmptyCollection
from lokal.rag.index import Index, StoredChunk

if TYPE_CHECKING:
    import bm25s

Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid")
RRF_K = 60  # the constant of Cormack et al. (2009); damps the weight of the very first ranks
FUSION_DEPTH = 100  # how deep each list goes into the fusion


def default_embedder() -> Encoder:
    from lokal.embeddings.torch_st import get_embedder

    return get_embedder()


@dataclass(frozen=True, slots=True)
class Hit:
    rank: int
    chunk_id: int
    source: str
    location: str
    text: str
    headings: tuple[str, ...]
    score: float  # the ranking score of the chosen mode (BM25, cosine, or RRF)
    bm25: float | None = None
    dense: float | None = None  # cosine similarity; the relevance gate of `ask` reads this one
    metadata: Mapping[str, Any] | None = None

    @property
    def name(self) -> str:
        return Path(self.source).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "chunk_id": self.chunk_id,
            "source": self.source,
            "location": self.location,
            "score": self.score,
            "bm25": self.bm25,
            "dense": self.dense,
            "headings": list(self.headings),
            "text": self.text,
            "metadata": dict(self.metadata or {}),
        }


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> Any:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=False)


def build_bm25(texts: list[str]) -> bm25s.BM25:
    import bm25s

    model = bm25s.BM25()
    model.index(tokenize(texts), show_progress=False)
    return model


def bm25_to_files(model: bm25s.BM25) -> dict[str, bytes]:
    # bm25s persists to a folder; we keep its files as blobs so a collection stays one SQLite file.
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def bm25_from_files(files: Mapping[str, bytes]) -> bm25s.BM25:
    import bm25s

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / Path(name).name).write_bytes(data)
        return bm25s.BM25.load(tmp)


def ensure_bm25(index: Index, chunks: list[StoredChunk] | None = None) -> bm25s.BM25 | None:
    """The collection's BM25 index, rebuilt and stored when the stored one is missing or stale."""
    generation = index.generation()
    files = index.load_bm25(generation)
    if files:
        return bm25_from_files(files)
    if chunks is None:
        chunks, _ = index.load_chunks()
    if not chunks:
        return None
    model = build_bm25([c.index_text for c in chunks])
    # A read-only or busy file: serve the index built in memory, and store it another time.
    with suppress(sqlite3.OperationalError):
        index.save_bm25(bm25_to_files(model), generation)
    return model


def _top(scores: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n best allowed scores, best first."""
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0 or n <= 0:
        return candidates[:0]
    sub = scores[candidates]
    if candidates.size > n:
        part = np.argpartition(-sub, n - 1)[:n]
        candidates, sub = candidates[part], sub[part]
    return candidates[np.argsort(-sub, kind="stable")]


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: each list adds 1/(k + rank) to every item it ranks."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


class Retriever:
    """A loaded collection. Search is read-only on the arrays, so one instance serves many threads."""

    def __init__(self, index: Index, embedder: Encoder | Callable[[], Encoder] | None = None) -> None:
        self.name = index.name
        self.path = index.path
        self.generation = index.generation()
        self.chunks, self.vectors = index.load_chunks()
        self._bm25 = ensure_bm25(index, self.chunks)
        self._embedder_or_factory = embedder or default_embedder
        self._embedder: Encoder | None = None
        self._fields: list[dict[str, str]] | None = None

    @property
    def embedder(self) -> Encoder:
        # Loading MiniLM takes seconds: a BM25-only search never pays for it.
        if self._embedder is None:
            e = self._embedder_or_factory
            self._embedder = e() if callable(e) and not hasattr(e, "encode") else cast(Encoder, e)
        return self._embedder

    def __len__(self) -> int:
        return len(self.chunks)

    def _filterable(self) -> list[dict[str, str]]:
        if self._fields is None:
            self._fields = [
                {
                    **{k: str(v) for k, v in c.metadata.items()},
                    "source": c.source,
                    "name": Path(c.source).name,
                    "kind": c.kind,
                    "heading": " > ".join(c.headings),
                }
                for c in self.chunks
            ]
        return self._fields

    def mask(self, filters: Mapping[str, str] | None) -> np.ndarray:
        """Which chunks pass all filters; values are shell patterns ({"source": "*/guides/*"})."""
        allowed = np.ones(len(self.chunks), dtype=bool)
        if not filters:
            return allowed
        fields = self._filterable()
        for key, pattern in filters.items():
            allowed &= np.fromiter(
                (key in f and fnmatch.fnmatchcase(f[key], pattern) for f in fields),
                dtype=bool,
                count=len(fields),
            )
        return allowed

    def bm25_scores(self, query: str) -> np.ndarray:
        if self._bm25 is None:
            return np.zeros(len(self.chunks), dtype=np.float32)
        import bm25s

        tokens = bm25s.tokenize(
            [query], stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
        )
        words = [t for t in tokens[0] if t]
        if not words:  # only stop words: BM25 has nothing to match
            return np.zeros(len(self.chunks), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(words), dtype=np.float32)

    def embed_query(self, query: str) -> np.ndarray:
        with one_torch_thread():
            vec: np.ndarray = self.embedder.encode([query])[0]
        return vec

    def dense_scores(self, query: str) -> np.ndarray:
        if len(self.chunks) == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.vectors @ self.embed_query(query), dtype=np.float32)

    def search(
        self, query: str, k: int = 5, mode: Mode = "hybrid", filters: Mapping[str, str] | None = None
    ) -> list[Hit]:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not self.chunks:
            raise EmptyCollection(
                f"collection {self.name!r} has no chunks: ingest documents first (lokal rag ingest PATH "
                f"--collection {self.name})",
                param="collection",
            )
        k = max(1, k)
        allowed = self.mask(filters)
        bm = self.bm25_scores(query) if mode in ("bm25", "hybrid") else None
        dn = self.dense_scores(query) if mode in ("dense", "hybrid") else None
        if mode == "bm25":
            assert bm is not None
            order = _top(bm, allowed & (bm > 0), k)
            ranked = [(int(i), float(bm[i])) for i in order]
        elif mode == "dense":
            assert dn is not None
            ranked = [(int(i), float(dn[i])) for i in _top(dn, allowed, k)]
        else:
            assert bm is not None and dn is not None
            depth = max(FUSION_DEPTH, k)
            lists = [_top(bm, allowed & (bm > 0), depth).tolist(), _top(dn, allowed, depth).tolist()]
            fused = rrf(lists)
            ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [self._hit(rank, i, score, bm, dn) for rank, (i, score) in enumerate(ranked, start=1)]

    def _hit(self, rank: int, i: int, score: float, bm: np.ndarray | None, dn: np.ndarray | None) -> Hit:
        c = self.chunks[i]
        return Hit(
            rank=rank,
            chunk_id=c.id,
            source=c.source,
            location=c.location,
            text=c.text,
            headings=c.headings,
            score=score,
            bm25=None if bm is None else float(bm[i]),
            dense=None if dn is None else float(dn[i]),
            metadata=c.metadata,
        )

    def with_similarity(self, query: str, hits: list[Hit]) -> list[Hit]:
        """Fill in the cosine similarity of hits ranked without it (BM25 mode), for the relevance gate."""
        if all(h.dense is not None for h in hits):
            return hits
        q = self.embed_query(query)
        row = {c.id: i for i, c in enumerate(self.chunks)}
        return [replace(h, dense=float(self.vectors[row[h.chunk_id]] @ q)) for h in hits]


class RetrieverCache:
    """One loaded Retriever per collection, reloaded when an ingest has changed the file since."""

    def __init__(self, home: Path | None = None, embedder: Encoder | None = None) -> None:
        self._home = home
        self._embedder = embedder
        self._lock = threading.Lock()
        self._loaded: dict[tuple[Path, str], tuple[Index, Retriever, int]] = {}

    @property
    def home(self) -> Path:
        return self._home or get_settings().home

    def get(self, name: str) -> Retriever:
        key = (self.home, name)
        with self._lock:
            if key in self._loaded:
                index, retriever, inode = self._loaded[key]
                # The inode tells a dropped and re-created collection from the one we hold open.
                if _inode(index.path) == inode and index.generation() == retriever.generation:
                    return retriever
                index.close()
                del self._loaded[key]
            index = Index.open(name, self.home)  # raises CollectionNotFound
            retriever = Retriever(index, self._embedder or default_embedder)
            self._loaded[key] = (index, retriever, _inode(index.path))
            return retriever


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except OSError:
        return -1
