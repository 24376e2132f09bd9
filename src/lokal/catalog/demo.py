"""The offline demo model `lokal serve` falls back to: a catalog entry that exists while its file does.

It is never written to the user's catalog.yaml. A fallback the user did not ask for must not become a
permanent part of their catalog; the entry appears (built-in, labelled synthetic) exactly while
LOKAL_HOME/models/synthetic/lokal-demo-synthetic/ holds its GGUF, and `lokal cache remove` makes it go away.
This module stays free of numpy: every catalog load asks it.
"""

from __future__ import annotations

from pathlib import Path

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings

DEMO_ALIAS = "lokal-demo-synthetic"
DEMO_QUANT = "q8_0"
DEMO_CONTEXT = 4096
DEMO_NOTE = (
    "SYNTHETIC: random weights, the offline stand-in `lokal serve` uses when no real model is available. "
    "Its text is noise."
)


def demo_path(settings: Settings) -> Path:
    return settings.models_dir / "synthetic" / DEMO_ALIAS / f"{DEMO_ALIAS}-{DEMO_QUANT}.gguf"


def demo_spec(settings: Settings) -> ModelSpec | None:
    """The demo's catalog entry, or None while its file is not on disk."""
    path = demo_path(settings)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    return ModelSpec(
        alias=DEMO_ALIAS,
        display_name=f"{DEMO_ALIAS} (synthetic)",
        publisher="lokal-synthetic",
        license="none",
        context_length=DEMO_CONTEXT,
        capabilities=["general"],
        synthetic=True,
        description=DEMO_NOTE,
        variants=[
            Variant(
                id=f"{DEMO_ALIAS}-cpu:1",
                device="cpu",
                engine="llamacpp",
                path=str(path),
                quant=DEMO_QUANT,
                size_bytes=size,
            )
        ],
    )
