"""Blocks -> chunks: cut at headings, pack whole paragraphs up to a size, carry a tail over as overlap.

A chunk never spans two sections (its heading path is one context; a PDF page counts as a section), and a
paragraph is only split when it alone is larger than a chunk (then at sentence ends, at spaces as the last
resort).
"""

from __future__ import annotations

from dataclasses import dataclass

from lokal.rag.loaders import Block, Parsed, Unit, split_sentences

DEFAULT_MAX_CHARS = 1000  # ~250 tokens: MiniLM reads 256 word pieces, more would be cut off unseen
DEFAULT_OVERLAP_CHARS = 150


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    headings: tuple[str, ...]
    start: int
    end: int
    location: str


def _split_long(block: Block, max_chars: int) -> list[Block]:
    if len(block.text) <= max_chars:
        return [block]
    pieces: list[str] = []
    buf = ""
    for sentence in split_sentences(block.text):
        while len(sentence) > max_chars:  # one "sentence" longer than a chunk: cut at a space
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if buf and len(buf) + 1 + len(sentence) > max_chars:
            pieces.append(buf)
            buf = sentence
        else:
            buf = f"{buf} {sentence}" if buf else sentence
    if buf:
        pieces.append(buf)
    return [Block(p, block.headings, block.start, block.end) for p in pieces if p]


def _tail(blocks: list[Block], overlap_chars: int) -> list[Block]:
    """The end of the previous chunk to repeat at the start of the next: whole blocks, else last sentences."""
    if overlap_chars <= 0 or not blocks:
        return []
    out: list[Block] = []
    size = 0
    for b in reversed(blocks):
        if size + len(b.text) > overlap_chars:
            break
        out.insert(0, b)
        size += len(b.text) + 2
    if out:
        return out
    last = blocks[-1]
    sentences: list[str] = []
    for s in reversed(split_sentences(last.text)):
        if sum(len(x) + 1 for x in sentences) + len(s) > overlap_chars:
            break
        sentences.insert(0, s)
    return [Block(" ".join(sentences), last.headings, last.end, last.end)] if sentences else []


def describe(unit: Unit, headings: tuple[str, ...], start: int, end: int) -> str:
    span = str(start) if start == end else f"{start}-{end}"
    where = {
        "line": f"line {span}" if start == end else f"lines {span}",
        "page": f"page {span}" if start == end else f"pages {span}",
        "row": f"row {span}" if start == end else f"rows {span}",
        "para": f"¶{span}",
    }[unit]
    return f"{' > '.join(headings)}, {where}" if headings else where


def chunk(
    parsed: Parsed, max_chars: int = DEFAULT_MAX_CHARS, overlap_chars: int = DEFAULT_OVERLAP_CHARS
) -> list[Chunk]:
    if max_chars < 50:
        raise ValueError("max_chars must be at least 50")
    # Rows of a table stand alone: repeating the previous row as overlap adds noise, not context.
    overlap = 0 if parsed.unit == "row" else min(overlap_chars, max_chars // 2)
    pieces = [p for b in parsed.blocks for p in _split_long(b, max_chars)]
    chunks: list[Chunk] = []
    current: list[Block] = []

    def emit() -> None:
        if current:
            text = "\n\n".join(b.text for b in current)
            start, end = min(b.start for b in current), max(b.end for b in current)
            hs = current[0].headings
            chunks.append(Chunk(text, hs, start, end, describe(parsed.unit, hs, start, end)))

    def same_section(a: Block, b: Block) -> bool:
        # A PDF page is a section too: a citation then names one page, the one to open.
        return a.headings == b.headings and (parsed.unit != "page" or a.end == b.start)

    for piece in pieces:
        size = sum(len(b.text) + 2 for b in current)
        if current and (not same_section(current[-1], piece) or size + len(piece.text) > max_chars):
            emit()
            current = _tail(current, overlap) if same_section(current[-1], piece) else []
            while current and sum(len(b.text) + 2 for b in current) + len(piece.text) > max_chars:
                current.pop(0)
        current.append(piece)
    emit()
    return chunks
