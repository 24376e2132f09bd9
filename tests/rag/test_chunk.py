from __future__ import annotations

from pathlib import Path

from lokal.rag import loaders
from lokal.rag.chunk import chunk
from lokal.rag.loaders import Block, Parsed
from tests.rag.helpers import GUIDE_MD, INVENTORY_CSV, MANUAL_PAGES, make_pdf


def _para(n: int, words: int = 12) -> str:
    return " ".join(f"w{n}x{i}" for i in range(words)) + "."


def test_chunks_never_cross_a_heading() -> None:
    chunks = chunk(loaders.load(Path("guide.md"), GUIDE_MD.encode()), max_chars=2000)
    sections = ["Lokal user guide", "Installation", "Configuration", "Troubleshooting"]
    assert [c.headings[-1] for c in chunks] == sections
    config = chunks[2]
    assert config.location == "Lokal user guide > Configuration, lines 12-15"
    assert "port 5273" in config.text and "LOKAL_HOME" in config.text


def test_paragraphs_are_packed_up_to_the_size_with_overlap() -> None:
    paras = [Block(_para(i), ("Doc",), i * 2 + 1, i * 2 + 1) for i in range(10)]
    chunks = chunk(Parsed("txt", "line", paras), max_chars=300, overlap_chars=100)
    assert len(chunks) > 2
    assert all(len(c.text) <= 300 for c in chunks)
    # every paragraph is somewhere, whole
    for p in paras:
        assert any(p.text in c.text for c in chunks)
    # consecutive chunks share their boundary paragraph (overlap), and spans move forward
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.text.split("\n\n")[-1] == b.text.split("\n\n")[0]
        assert b.start > a.start


def test_an_oversized_paragraph_is_split_at_sentences() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} at some length." for i in range(40)]
    block = Block(" ".join(sentences), (), 1, 1)
    chunks = chunk(Parsed("txt", "line", [block]), max_chars=200, overlap_chars=0)
    assert len(chunks) > 5 and all(len(c.text) <= 200 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)  # cut at sentence ends, not mid-word
    assert " ".join(c.text for c in chunks) == block.text


def test_pdf_pages_and_csv_rows_locate_their_chunks() -> None:
    pdf = chunk(loaders.load(Path("m.pdf"), make_pdf(MANUAL_PAGES)))
    assert [c.location for c in pdf] == ["page 1", "page 2"]  # a page boundary is a chunk boundary
    rows = chunk(loaders.load(Path("i.csv"), INVENTORY_CSV.encode()), max_chars=130)
    assert [c.location for c in rows] == ["rows 2-3", "row 4"]
    assert "titanium" not in rows[1].text  # no overlap between table rows
