from __future__ import annotations

from pathlib import Path

import pytest

from lokal.rag import loaders
from tests.rag.helpers import ANIMALS_HTML, GUIDE_MD, INVENTORY_CSV, MANUAL_PAGES, make_pdf


def test_markdown_keeps_heading_path_and_line_spans() -> None:
    parsed = loaders.load(Path("guide.md"), GUIDE_MD.encode())
    assert parsed.kind == "md" and parsed.unit == "line"
    config = next(b for b in parsed.blocks if "port 5273" in b.text)
    assert config.headings == ("Lokal user guide", "Configuration")
    lines = GUIDE_MD.splitlines()
    assert "port 5273" in lines[config.start - 1]
    # a '#' line inside a code fence is code, not a heading
    fence = next(b for b in parsed.blocks if "lokal serve --verbose" in b.text)
    assert fence.headings == ("Lokal user guide", "Troubleshooting")
    assert all("restart with more logging" not in h for b in parsed.blocks for h in b.headings)


def test_html_drops_scripts_and_tracks_headings() -> None:
    parsed = loaders.load(Path("animals.html"), ANIMALS_HTML.encode())
    text = " ".join(b.text for b in parsed.blocks)
    assert "javascript must never be indexed" not in text and "color: red" not in text
    penguins = next(b for b in parsed.blocks if "penguins" in b.text)
    assert penguins.headings == ("Animal facts", "Penguins")
    humps = [b.text for b in parsed.blocks if "hump" in b.text.lower()]
    assert "Dromedaries have one hump." in humps and "Bactrian camels have two humps." in humps


def test_csv_rows_carry_their_column_names() -> None:
    parsed = loaders.load(Path("inventory.csv"), INVENTORY_CSV.encode())
    assert parsed.unit == "row"
    assert parsed.blocks[0].text == "item: titanium bolts; warehouse: Rotterdam; quantity: 4200"
    assert [b.start for b in parsed.blocks] == [2, 3, 4]


def test_pdf_text_is_read_per_page() -> None:
    parsed = loaders.load(Path("manual.pdf"), make_pdf(MANUAL_PAGES))
    assert parsed.kind == "pdf"
    by_page = {b.start: b.text for b in parsed.blocks}
    assert "400 operating hours" in by_page[1]
    assert "ISO VG 320" in by_page[2]


def test_cp1252_text_is_decoded() -> None:
    parsed = loaders.load(Path("old.txt"), "Caf\u00e9 menu \u2013 na\u00efve".encode("cp1252"))
    assert parsed.blocks[0].text == "Caf\u00e9 menu \u2013 na\u00efve"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
        ("photo.png", b"...", "unsupported"),
    ],
)
def test_unreadable_input_is_reported_not_raised_as_a_crash(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(loaders.Unreadable, match=reason):
        loaders.load(Path(name), data)
