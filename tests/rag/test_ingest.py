from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lokal.rag.errors import CollectionNotFound, EmptyCollection, InvalidCollectionName
from lokal.rag.index import Index, delete_collection, list_collections
from lokal.rag.ingest import ingest
from lokal.rag.retrieve import Retriever
from tests.rag.helpers import NOTES_TXT


def test_every_format_lands_in_one_sqlite_file(corpus: Path, home: Path, embedder: Any) -> None:
    with Index.open("mixed", home, create=True) as idx:
        report = ingest(idx, [corpus], embedder=embedder)
        assert report.count("added") == 5 and report.count("skipped") == 0
        kinds = {Path(p).name: d.kind for p, d in idx.documents().items()}
        assert kinds == {
            "guide.md": "md",
            "notes.txt": "txt",
            "animals.html": "html",
            "inventory.csv": "csv",
            "manual.pdf": "pdf",
        }
        chunks, vectors = idx.load_chunks()
        assert vectors.shape == (len(chunks), 384) == (report.chunks_written, 384)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert (home / "rag" / "mixed.sqlite").is_file()
    (info,) = list_collections(home)
    assert (info.name, info.documents, info.chunks) == ("mixed", 5, len(chunks))


def test_reingest_touches_only_what_changed(corpus: Path, home: Path, embedder: Any) -> None:
    with Index.open("inc", home, create=True) as idx:
        ingest(idx, [corpus], embedder=embedder, max_chars=200)
        before = {c.id: (c.source, c.text) for c in idx.load_chunks()[0]}
        generation = idx.generation()

        again = ingest(idx, [corpus], embedder=embedder, max_chars=200)
        assert again.count("unchanged") == 5 and again.chunks_written == 0
        assert idx.generation() == generation  # nothing written at all

        (corpus / "notes.txt").write_text(NOTES_TXT.replace("Friday", "Tuesday"), encoding="utf-8")
        (corpus / "animals.html").unlink()
        (corpus / "extra.md").write_text(
            "# Extra\n\nThe staging cluster is called Gondor.\n", encoding="utf-8"
        )
        report = ingest(idx, [corpus], embedder=embedder, max_chars=200)

        status = {Path(r.path).name: r.status for r in report.results}
        assert status == {
            "notes.txt": "updated",
            "animals.html": "deleted",
            "extra.md": "added",
            "guide.md": "unchanged",
            "inventory.csv": "unchanged",
            "manual.pdf": "unchanged",
        }
        after = {c.id: (c.source, c.text) for c in idx.load_chunks()[0]}
        untouched = {"guide.md", "inventory.csv", "manual.pdf"}
        kept = {cid: v for cid, v in before.items() if Path(v[0]).name in untouched}
        assert kept and all(after[cid] == v for cid, v in kept.items())  # same rows, same ids
        assert not any(s.endswith("animals.html") for s, _ in after.values())
        texts = " ".join(t for _, t in after.values())
        assert "descaled every Tuesday" in texts and "descaled every Friday" not in texts

        retriever = Retriever(idx, embedder)  # BM25 was rebuilt: it sees the new words, not the old file
        assert "Tuesday" in retriever.search("coffee machine descaled", k=1, mode="bm25")[0].text
        assert retriever.search("emperor penguins", k=3, mode="bm25") == []
        assert retriever.search("staging cluster name", k=1)[0].source.endswith("extra.md")


def test_a_deleted_file_given_by_name_is_removed(corpus: Path, home: Path, embedder: Any) -> None:
    target = corpus / "guide.md"
    with Index.open("single", home, create=True) as idx:
        assert ingest(idx, [target], embedder=embedder).count("added") == 1
        target.unlink()
        report = ingest(idx, [target], embedder=embedder)
        assert [(r.status, Path(r.path).name) for r in report.results] == [("deleted", "guide.md")]
        assert idx.counts() == (0, 0)
        missing = ingest(idx, [corpus / "never-there"], embedder=embedder)
        assert [(r.status, r.reason) for r in missing.results] == [("skipped", "not found")]


def test_unreadable_files_are_skipped_with_a_reason(corpus: Path, home: Path, embedder: Any) -> None:
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    (corpus / "photo.png").write_bytes(b"\x89PNG")
    (corpus / "dangling.md").symlink_to(corpus / "nowhere.md")
    (corpus / ".git").mkdir()
    (corpus / ".git" / "notes.md").write_text("# hidden\n\nnever indexed\n")
    with Index.open("skips", home, create=True) as idx:
        report = ingest(idx, [corpus], embedder=embedder)
        skipped = {Path(r.path).name: r.reason for r in report.results if r.status == "skipped"}
        assert set(skipped) == {"image.txt", "broken.pdf", "photo.png", "dangling.md"}
        assert "binary" in skipped["image.txt"]
        assert "PDF" in skipped["broken.pdf"]
        assert "unsupported" in skipped["photo.png"]
        assert "No such file" in skipped["dangling.md"]
        assert report.count("added") == 5

        # a file that was fine and turns unreadable must not keep serving its old text
        (corpus / "notes.txt").write_bytes(b"\x00\x01\x02 binary now")
        report = ingest(idx, [corpus], embedder=embedder)
        (notes,) = [r for r in report.results if r.path.endswith("notes.txt")]
        assert notes.status == "skipped" and "removed" in notes.reason
        assert not any(c.source.endswith("notes.txt") for c in idx.load_chunks()[0])


def test_an_interrupted_ingest_leaves_whole_documents_only(
    tmp_path: Path, home: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(12):
        paras = [f"Document {i} paragraph {j} about subject {i * 10 + j}." for j in range(3)]
        (docs / f"doc{i:02d}.md").write_text(f"# Doc {i}\n\n" + "\n\n".join(paras) + "\n")

    real = Index.replace_document
    calls = 0

    def interrupted(self: Index, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        real(self, *args, **kwargs)
        if calls == 5:  # inside the second batch's transaction, after one of its documents was written
            raise KeyboardInterrupt

    monkeypatch.setattr(Index, "replace_document", interrupted)
    with Index.open("interrupted", home, create=True) as idx:
        with pytest.raises(KeyboardInterrupt):
            # 60 chars per chunk: each document is 3 chunks; a batch closes at 8 chunks = 3 documents
            ingest(idx, [docs], embedder=embedder, max_chars=60, overlap_chars=0, batch_chunks=8)
        monkeypatch.setattr(Index, "replace_document", real)

        stored = idx.documents()
        assert sorted(Path(p).name for p in stored) == [
            "doc00.md",
            "doc01.md",
            "doc02.md",
        ]  # batch 2 rolled back
        chunks, vectors = idx.load_chunks()
        per_doc = Counter(c.source for c in chunks)
        assert all(per_doc[p] == d.n_chunks == 3 for p, d in stored.items())
        assert len(vectors) == len(chunks) == 9
        assert len(Retriever(idx, embedder)) == 9  # the stale BM25 index is rebuilt from what is there

        resumed = ingest(idx, [docs], embedder=embedder, max_chars=60, overlap_chars=0)
        assert resumed.count("unchanged") == 3 and resumed.count("added") == 9
        assert idx.counts() == (12, 36)


def test_collection_errors_are_clear(home: Path, embedder: Any) -> None:
    with pytest.raises(CollectionNotFound, match="lokal rag ingest") as err:
        Index.open("nope", home)
    assert err.value.status_code == 404
    with pytest.raises(InvalidCollectionName):
        Index.open("../escape", home, create=True)
    with Index.open("empty", home, create=True) as idx, pytest.raises(EmptyCollection, match="no chunks"):
        Retriever(idx, embedder).search("anything")
    delete_collection("empty", home)
    assert not (home / "rag" / "empty.sqlite").exists()
    with pytest.raises(CollectionNotFound):
        delete_collection("empty", home)
