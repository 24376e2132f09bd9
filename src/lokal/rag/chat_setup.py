"""What `lokal chat` puts around Chainlit: its own config and readme, and a page that loads nothing from the
internet.

Chainlit's stock page links Google Fonts and a KaTeX stylesheet on jsdelivr; a local chat must not phone out
(offline machines wait on them, and every page view tells third parties someone is chatting). The config
lokal writes turns LaTeX off (KaTeX is what the stylesheet is for) and the links are stripped from the page,
so the UI uses the system font. Files lokal wrote carry a marker line; a config or readme the user edited
(no marker) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

MARKER = "# written by lokal chat; delete this line to keep your own edits"
UPLOAD_TYPES = {
    "text/markdown": [".md", ".markdown"],
    "text/plain": [".txt"],
    "text/html": [".html", ".htm"],
    "application/pdf": [".pdf"],
    "text/csv": [".csv"],
}

README = """# lokal chat

Ask questions about your documents. Answers come only from the selected **collection**, with numbered
citations like [1]; when nothing in it is relevant enough, the chat says so instead of guessing.

- **Follow-ups** use the conversation: "and how long does that take?" is read with the question before it.
- **Add documents**: attach files (md, txt, html, pdf, csv) to a message; they are ingested into the
  selected collection, and the message (if any) is answered from the updated collection.
- **Settings** (the gear by the input): model, collection, retrieval mode, temperature, max tokens,
  passages (top-k) and the minimum similarity a passage needs to be used.
- A model marked **SYNTHETIC** has random weights: its answers are noise.

Everything runs on this machine: the models behind lokal's OpenAI-compatible API, the collections in
`$LOKAL_HOME/rag`. This page loads nothing from the internet. The same collections answer
`lokal rag ask` and the playground's Collection mode, with the same relevance gate.
"""


def config_toml(chainlit_version: str) -> str:
    accept = ", ".join(f'"{mime}" = [{", ".join(repr(e).replace(chr(39), chr(34)) for e in exts)}]'
                       for mime, exts in UPLOAD_TYPES.items())  # fmt: skip
    return f"""{MARKER}
[project]
user_env = []
session_timeout = 3600
cache = false
allow_origins = ["http://127.0.0.1", "http://localhost"]

[features]
unsafe_allow_html = false
# KaTeX would need a stylesheet from the internet.
latex = false
user_message_markdown = true
edit_message = false

[features.spontaneous_file_upload]
enabled = true
accept = {{ {accept} }}
max_files = 10
max_size_mb = 50

[features.audio]
enabled = false

[UI]
name = "lokal chat"
description = "Answers from your documents, with citations, from local models."
cot = "hidden"
default_theme = "light"
logo_file_url = ""
default_avatar_file_url = ""

[meta]
generated_by = "{chainlit_version}"
"""


def _ours_or_absent(path: Path, stock_start: str | None = None) -> bool:
    if not path.exists():
        return True
    text = path.read_text(encoding="utf-8", errors="replace")
    return MARKER in text or (stock_start is not None and text.startswith(stock_start))


def prepare_root(root: Path, chainlit_version: str) -> None:
    """Write lokal's .chainlit/config.toml and chainlit.md into Chainlit's app root (unless the user's own)."""
    config = root / ".chainlit" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    # Chainlit's generated config (first line "[project]") was never the user's choice either.
    if _ours_or_absent(config, "[project]"):
        config.write_text(config_toml(chainlit_version), encoding="utf-8")
    readme = root / "chainlit.md"
    if _ours_or_absent(readme, "# Welcome to Chainlit!"):
        readme.write_text(f"<!-- {MARKER} -->\n{README}", encoding="utf-8")


_EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*/?>\s*", re.I | re.S)


def offline_html(html: str) -> str:
    """Chainlit's page without the links it makes to other hosts (fonts, KaTeX CSS, their preconnects)."""
    return _EXTERNAL_LINK.sub("", html)


def install_offline_page(server_module: ModuleType) -> None:
    """Make Chainlit's server render `offline_html` of its page (idempotent)."""
    original: Callable[[str], str] = server_module.get_html_template
    if getattr(original, "_lokal_offline", False):
        return

    def template(root_path: str) -> str:
        return offline_html(original(root_path))

    template._lokal_offline = True  # type: ignore[attr-defined]
    server_module.get_html_template = template  # type: ignore[attr-defined]
