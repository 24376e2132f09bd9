"""The offline demo model `lokal serve` falls back to: a catalog entry that exists while its files do.

It is never written to the user's catalog.yaml. A fallback the user did not ask for must not become a
permanent part of their catalog; the entry appears (built-in, labelled synthetic) exactly while
LOKAL_HOME/models/synthetic/lokal-demo-synthetic/ holds its model, and `lokal cache remove` makes it go away.
The model is written for the engine that is installed (lokal.catalog.synth.ensure_demo): a GGUF for llama.cpp,
an ONNX GenAI folder (onnx/) for ONNX Runtime GenAI. The entry lists a variant for each one on disk.
This module stays free of numpy: every catalog load asks it.
"""

from __future__ import annotations

from pathlib import Path

from lokal.catalog.spec import EngineName, ModelSpec, Variant
from lokal.config import Settings

DEMO_ALIAS = "lokal-demo-synthetic"
DEMO_QUANT = "q8_0"
DEMO_ONNX_PRECISION = "int4"  # MatMulNBits, as the published ONNX GenAI CPU builds are
DEMO_CONTEXT = 4096
DEMO_NOTE = (
    "SYNTHETIC: random weights, the offline stand-in `lokal serve` uses when no real model is available. "
    "Its text is noise."
)


def demo_dir(settings: Settings) -> Path:
    return settings.models_dir / "synthetic" / DEMO_ALIAS


def demo_path(settings: Settings) -> Path:
    """The GGUF demo (engine llamacpp)."""
    return demo_dir(settings) / f"{DEMO_ALIAS}-{DEMO_QUANT}.gguf"


def demo_onnx_path(settings: Settings) -> Path:
    """The ONNX GenAI demo folder (engine onnx); it appears whole, renamed into place once written."""
    return demo_dir(settings) / "onnx"


def demo_files(settings: Settings) -> tuple[Path, Path]:
    """The files whose presence says a demo model is on disk (GGUF, ONNX)."""
    return demo_path(settings), demo_onnx_path(settings) / "genai_config.json"


def demo_written(settings: Settings) -> tuple[bool, bool]:
    """Which of the demo's models are on disk (GGUF, ONNX): a change means the demo's entry changed."""
    gguf, onnx = demo_files(settings)
    return gguf.is_file(), onnx.is_file()


def _size(path: Path) -> int | None:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return path.stat().st_size
    except OSError:
        return None


def demo_variants(settings: Settings) -> list[Variant]:
    """A variant for each demo model on disk, the GGUF first (catalog order: the choice by installed engine
    takes the first whose engine is there)."""
    gguf, onnx = demo_written(settings)
    variants = []
    demos: tuple[tuple[bool, str, EngineName, Path, str], ...] = (
        (gguf, "cpu", "llamacpp", demo_path(settings), DEMO_QUANT),
        (onnx, "onnx-cpu", "onnx", demo_onnx_path(settings), DEMO_ONNX_PRECISION),
    )
    for written, suffix, engine, path, quant in demos:
        if written and (size := _size(path)) is not None:
            variants.append(
                Variant(
                    id=f"{DEMO_ALIAS}-{suffix}:1", device="cpu", engine=engine, path=str(path), quant=quant,
                    size_bytes=size,
                )  # fmt: skip
            )
    return variants


def demo_spec(settings: Settings) -> ModelSpec | None:
    """The demo's catalog entry, or None while none of its models is on disk."""
    variants = demo_variants(settings)
    if not variants:
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
        variants=variants,
    )
