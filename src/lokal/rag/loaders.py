"""File -> blocks (paragraphs, lists, code, table rows, page text) with the heading path and position of each.

Loaders keep structure rather than flattening to text, so the chunker can cut at headings and paragraphs and
every chunk can say where it came from (lines, page, rows).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Unit = Literal["line", "page", "row", "para"]


class Unreadable(Exception):
    """The file cannot be turned into text; ingest reports the reason and moves on."""


@dataclass(frozen=True, slots=True)
class Block:
    text: str
    headings: tuple[str, ...] = ()
    start: int = 0  # first line / page / row / paragraph, 1-based
    end: int = 0


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: str
    unit: Unit
    blocks: list[Block]


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise Unreadable("binary content")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        # Windows-1252 is the usual non-UTF-8 text in the wild; it refuses 5 bytes, so noise still fails.
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise Unreadable("not UTF-8 or Windows-1252 text") from exc


def _paragraphs(text: str, headings: tuple[str, ...] = (), first_line: int = 1) -> list[Block]:
    """Blank-line separated paragraphs with their line span."""
    blocks: list[Block] = []
    buf: list[str] = []
    start = first_line
    for n, line in enumerate(text.splitlines(), start=first_line):
        if line.strip():
            if not buf:
                start = n
            buf.append(line.rstrip())
        elif buf:
            blocks.append(Block("\n".join(buf).strip(), headings, start, n - 1))
            buf = []
    if buf:
        blocks.append(Block("\n".join(buf).strip(), headings, start, start + len(buf) - 1))
    return blocks


def load_text(data: bytes) -> Parsed:
    return Parsed("txt", "line", _paragraphs(_decode(data)))


def load_markdown(data: bytes) -> Parsed:
    from markdown_it import MarkdownIt

    source = _decode(data)
    lines = source.splitlines()
    # A real parser, so "# comment" inside a code fence is not mistaken for a heading.
    tokens = MarkdownIt("commonmark").enable("table").parse(source)
    stack: list[tuple[int, str]] = []
    blocks: list[Block] = []
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.nesting < 0 or tok.map is None:
            continue
        if tok.type == "heading_open":
            depth = int(tok.tag[1:])
            title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            stack = [(d, t) for d, t in stack if d < depth] + [(depth, title)]
            continue
        first, last = tok.map
        text = "\n".join(lines[first:last]).strip()
        if text:
            blocks.append(Block(text, tuple(t for _, t in stack), first + 1, last))
    return Parsed("md", "line", blocks)


_HTML_BLOCKS = ("p", "li", "pre", "blockquote", "td", "th", "dd", "dt", "figcaption", "caption", "address")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def load_html(data: bytes) -> Parsed:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "nav", "head"]):
        tag.decompose()
    stack: list[tuple[int, str]] = []
    blocks: list[Block] = []
    n = 0
    for el in soup.find_all([*_HEADINGS, *_HTML_BLOCKS]):
        if el.name in _HEADINGS:
            depth = int(el.name[1])
            title = " ".join(el.get_text(" ").split())
            stack = [(d, t) for d, t in stack if d < depth] + [(depth, title)]
            continue
        # An outer block holding inner ones (li > p) would repeat their text: the inner ones speak for it.
        if el.find([*_HTML_BLOCKS]) is not None:
            continue
        text = " ".join(el.get_text(" ").split())
        if text:
            n += 1
            blocks.append(Block(text, tuple(t for _, t in stack), n, n))
    if not blocks:  # no block markup at all (a bare text body): fall back to its lines
        body = soup.get_text("\n")
        blocks = [Block(b.text, (), i, i) for i, b in enumerate(_paragraphs(body), start=1)]
    return Parsed("html", "para", blocks)


def load_pdf(data: bytes) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise Unreadable(f"unreadable PDF ({exc})") from exc
    blocks: list[Block] = []
    for number, text in enumerate(pages, start=1):
        for para in _paragraphs(text):
            blocks.append(Block(para.text, (), number, number))
    return Parsed("pdf", "page", blocks)


def load_csv(data: bytes) -> Parsed:
    text = _decode(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return Parsed("csv", "row", [])
    header = [h.strip() for h in rows[0]]
    blocks: list[Block] = []
    # Each row as "column: value" pairs: retrieval then matches a question naming a column, and the
    # model reading the chunk sees what each value means without the header row.
    for number, row in enumerate(rows[1:], start=2):
        cells = [
            f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {v.strip()}"
            for i, v in enumerate(row)
            if v.strip()
        ]
        if cells:
            blocks.append(Block("; ".join(cells), (), number, number))
    return Parsed("csv", "row", blocks)


LOADERS: dict[str, Callable[[bytes], Parsed]] = {
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".text": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
    ".csv": load_csv,
}


def supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load(path: Path, data: bytes) -> Parsed:
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise Unreadable(f"unsupported file type {path.suffix or '(none)'}")
    if path.suffix.lower() != ".pdf" and b"\x00" in data[:8192]:
        raise Unreadable("binary content")
    try:
        return loader(data)
    except Unreadable:
        raise
    except (ValueError, RecursionError, csv.Error) as exc:  # malformed input in a parser: skip, not crash
        raise Unreadable(f"cannot parse ({type(exc).__name__}: {exc})") from exc


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]
