"""RAG benchmark: ingest throughput (chunks/s) and retrieval latency (p50/p95) on a synthetic corpus.

    python benchmarks/bench_rag.py                    # 10k chunks, 200 queries per mode
    python benchmarks/bench_rag.py --chunks 2000 --json

The corpus is Markdown: files of 20 sections, one ~90-word paragraph each, so every section is one chunk
and the chunk count is exact. Words are English whole words from MiniLM's own WordPiece vocabulary (which
lists them roughly by frequency), drawn with Zipf weights: BM25 sees a realistic spread of term
frequencies and each word costs the embedder one token, as in real prose. Queries are 6 consecutive words
of a random chunk; "self-hit" is whether that chunk is returned (a sanity check, not a quality metric:
the text is word salad, which dense retrieval cannot understand).
Everything runs with the real code path: loaders, chunker, MiniLM embedder, SQLite, bm25s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lokal.rag.index import Index
from lokal.rag.ingest import ingest
from lokal.rag.retrieve import MODES, Retriever

SECTIONS_PER_FILE = 20
WORDS_PER_PARAGRAPH = 90


def vocabulary(size: int = 20_000) -> list[str]:
    from lokal.embeddings.minilm import minilm_path

    lines = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").split()
    return [w for w in lines if w.isascii() and w.isalpha() and len(w) >= 3][:size]


def write_corpus(folder: Path, chunks: int, seed: int = 0) -> list[str]:
    """Write the corpus; return the paragraphs (one per chunk) for drawing queries."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks**1.1
    p /= p.sum()
    paragraphs: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    files = (chunks + SECTIONS_PER_FILE - 1) // SECTIONS_PER_FILE
    for f in range(files):
        sections = []
        for s in range(min(SECTIONS_PER_FILE, chunks - f * SECTIONS_PER_FILE)):
            words = rng.choice(vocab, WORDS_PER_PARAGRAPH, p=p)
            para = " ".join(words).capitalize() + "."
            paragraphs.append(para)
            sections.append(f"## Section {s}\n\n{para}\n")
        (folder / f"doc{f:05d}.md").write_text(f"# Document {f}\n\n" + "\n".join(sections), encoding="utf-8")
    return paragraphs


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(chunks: int, queries: int, k: int, workdir: Path) -> dict[str, Any]:
    from lokal.embeddings.torch_st import get_embedder

    t = time.perf_counter()
    embedder = get_embedder()
    embedder.encode(["warm up"])
    load_s = time.perf_counter() - t

    docs = workdir / "corpus"
    paragraphs = write_corpus(docs, chunks)
    home = workdir / "home"
    with Index.open("bench", home, create=True) as idx:
        t = time.perf_counter()
        report = ingest(idx, [docs], embedder=embedder)
        ingest_s = time.perf_counter() - t
        n_docs, n_chunks = idx.counts()
        assert n_chunks == chunks, f"expected {chunks} chunks, got {n_chunks}"

        t = time.perf_counter()
        again = ingest(idx, [docs], embedder=embedder)
        reingest_s = time.perf_counter() - t

        t = time.perf_counter()
        retriever = Retriever(idx, embedder)
        open_s = time.perf_counter() - t

    rng = np.random.default_rng(1)
    qs = []
    for _ in range(queries):
        words = paragraphs[int(rng.integers(len(paragraphs)))].rstrip(".").split()
        start = int(rng.integers(0, len(words) - 6))
        qs.append(" ".join(words[start : start + 6]))

    latency: dict[str, dict[str, float]] = {}
    for mode in MODES:
        for q in qs[:10]:  # warm-up: first-call costs (allocations, caches) are not steady state
            retriever.search(q, k=k, mode=mode)
        times = []
        hits = 0
        for q in qs:
            t = time.perf_counter()
            result = retriever.search(q, k=k, mode=mode)
            times.append((time.perf_counter() - t) * 1000)
            hits += any(q.lower() in h.text.lower() for h in result)
        latency[mode] = {
            "p50_ms": percentile(times, 50),
            "p95_ms": percentile(times, 95),
            "mean_ms": statistics.fmean(times),
            "self_hit": hits / len(qs),
        }
    embed_times = []
    for q in qs:
        t = time.perf_counter()
        retriever.embed_query(q)  # the path search takes (one torch thread for one sentence)
        embed_times.append((time.perf_counter() - t) * 1000)

    return {
        "chunks": n_chunks,
        "documents": n_docs,
        "embedder_load_s": load_s,
        "ingest_s": ingest_s,
        "ingest_chunks_per_s": report.chunks_written / ingest_s,
        "reingest_unchanged_s": reingest_s,
        "reingest_unchanged_files": again.count("unchanged"),
        "open_collection_s": open_s,
        "index_file_mb": (home / "rag" / "bench.sqlite").stat().st_size / 2**20,
        "query_embed_p95_ms": percentile(embed_times, 95),
        "queries": len(qs),
        "k": k,
        "latency": latency,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the corpus and index here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.workdir:
        result = run(args.chunks, args.queries, args.k, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="lokal-bench-rag-") as tmp:
            result = run(args.chunks, args.queries, args.k, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"corpus: {result['chunks']} chunks in {result['documents']} Markdown files")
    print(f"embedder load: {result['embedder_load_s']:.1f} s")
    print(
        f"ingest: {result['ingest_s']:.1f} s = {result['ingest_chunks_per_s']:.0f} chunks/s; "
        f"re-ingest unchanged: {result['reingest_unchanged_s']:.2f} s; "
        f"open collection: {result['open_collection_s']:.2f} s; index file {result['index_file_mb']:.0f} MB"
    )
    print(f"query embedding p95: {result['query_embed_p95_ms']:.1f} ms")
    print(f"retrieval over {result['queries']} queries, k={result['k']}:")
    for mode, m in result["latency"].items():
        print(
            f"  {mode:>6}: p50 {m['p50_ms']:6.1f} ms  p95 {m['p95_ms']:6.1f} ms  "
            f"mean {m['mean_ms']:6.1f} ms  self-hit {m['self_hit']:.2f}"
        )
    goal = result["latency"]["hybrid"]["p95_ms"]
    print(f"goal hybrid p95 <= 50 ms: {'met' if goal <= 50 else 'NOT met'} ({goal:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
