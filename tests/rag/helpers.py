"""RAG test material: a small mixed corpus (md, txt, html, csv, and a PDF written by hand) and a
deterministic OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# module level: FastAPI resolves the string annotations of the fake's routes against these globals
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

GUIDE_MD = """\
# Lokal user guide

Lokal runs small language models on your own computer behind an OpenAI-compatible API.

## Installation

Install the package with pip install lokal. Python 3.11 or newer is required.
On Windows, install Python from the official installer first.

## Configuration

The server listens on port 5273 by default, the same port that Foundry Local uses.
Set the environment variable LOKAL_PORT to choose another port.

Models are stored under LOKAL_HOME, which defaults to the .lokal folder in your home directory.

## Troubleshooting

```bash
# restart with more logging
lokal serve --verbose
```

If the server does not start, check that no other program already uses the port.
"""

NOTES_TXT = """\
Office notes

The coffee machine on the third floor is descaled every Friday afternoon by the facilities team.

Quarterly expense reports must be submitted before the fifth working day of the next quarter.

The bicycle storage room is in the basement and opens with the blue badge.
"""

ANIMALS_HTML = """\
<!doctype html>
<html><head><title>Animals</title><style>body { color: red }</style></head>
<body>
<script>var secret = "javascript must never be indexed";</script>
<h1>Animal facts</h1>
<h2>Penguins</h2>
<p>Emperor penguins huddle together in large groups to survive the freezing Antarctic winter.</p>
<h2>Camels</h2>
<p>Camels store fat, not water, in their humps, which lets them go for weeks without food.</p>
<ul><li>Dromedaries have one hump.</li><li>Bactrian camels have two humps.</li></ul>
</body></html>
"""

INVENTORY_CSV = """\
item,warehouse,quantity
titanium bolts,Rotterdam,4200
copper wire,Antwerp,150
solar panels,Hamburg,36
"""

MANUAL_PAGES = [
    ["Turbine maintenance manual", "", "The turbine must be inspected every 400 operating hours."],
    ["Lubricate the gearbox with synthetic oil of grade ISO VG 320."],
]

# (question, file that answers it, a phrase of the answering chunk)
KNOWN_QUESTIONS = [
    ("Which port does the server listen on by default?", "guide.md", "port 5273"),
    ("How often is the coffee machine descaled?", "notes.txt", "descaled every Friday"),
    ("How do emperor penguins survive the Antarctic winter?", "animals.html", "huddle together"),
    ("How many titanium bolts are stored in Rotterdam?", "inventory.csv", "titanium bolts"),
    ("How often must the turbine be inspected?", "manual.pdf", "400 operating hours"),
    ("Which oil should be used to lubricate the gearbox?", "manual.pdf", "ISO VG 320"),
]


INGEST_MAX_CHARS = 200


@dataclass
class Ingested:
    home: Path
    corpus: Path
    collection: str


def copy_collection(src: Ingested, home: Path, name: str = "docs") -> None:
    (home / "rag").mkdir(parents=True, exist_ok=True)
    shutil.copy(src.home / "rag" / f"{src.collection}.sqlite", home / "rag" / f"{name}.sqlite")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF (Helvetica text, one line per string) written by hand: no PDF writer needed."""
    objs: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    for i, lines in enumerate(pages):
        page_id, content_id = 4 + 2 * i, 5 + 2 * i
        kids.append(f"{page_id} 0 R")
        ops = ["BT", "/F1 12 Tf", "16 TL", "72 720 Td"]
        for line in lines:
            safe = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({safe}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objs[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
        ).encode()
        objs[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    objs[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    out = b"%PDF-1.4\n"
    offsets: dict[int, int] = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n".encode() + objs[num] + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for num in sorted(objs):
        out += f"{offsets[num]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.md").write_text(GUIDE_MD, encoding="utf-8")
    (folder / "notes.txt").write_text(NOTES_TXT, encoding="utf-8")
    (folder / "animals.html").write_text(ANIMALS_HTML, encoding="utf-8")
    (folder / "inventory.csv").write_text(INVENTORY_CSV, encoding="utf-8")
    (folder / "manual.pdf").write_bytes(make_pdf(MANUAL_PAGES))
    return folder


_PASSAGE = re.compile(r"^\[(\d+)\] [^\n]*\n(.+?)(?:\n\n\[\d+\] |\n\nQuestion: )", re.S | re.M)


def grounded_reply(body: dict[str, Any]) -> str:
    """Deterministic 'model': answers with the first sentence of passage [1] and cites it."""
    # The last user message holds the passages; earlier ones are the conversation so far.
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    m = _PASSAGE.search(user)
    if m is None:
        return "The context is insufficient to answer."
    first = re.split(r"(?<=[.!?])\s", " ".join(m.group(2).split()))[0]
    return f"{first} [{m.group(1)}]"


@dataclass
class FakeOpenAI:
    """State of the fake endpoint: what it received, and what it answers."""

    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: Any = grounded_reply  # Callable[[dict], str]
    models: list[str] = field(default_factory=lambda: ["fake-chat", "all-minilm-l6-v2"])
    fail_status: int | None = None


def fake_openai_app(state: FakeOpenAI) -> Any:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "owned_by": "test"} for m in state.models]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        if state.fail_status:
            err = {"message": "model is busy", "type": "server_error", "param": None, "code": "overloaded"}
            return JSONResponse({"error": err}, status_code=state.fail_status)
        text = state.reply(body)
        model = body["model"]
        if not body.get("stream"):
            return {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
            }

        def event(delta: dict[str, Any], finish: str | None) -> str:
            chunk = {
                "id": "cmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(chunk)}\n\n"

        async def stream() -> Any:
            yield event({"role": "assistant", "content": ""}, None)
            for token in re.findall(r"\S+\s*", text):
                yield event({"content": token}, None)
            yield event({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app
