"""`lokal model synth`: write a random-weight GGUF shaped like a real model and register it, labelled synthetic."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from lokal.catalog.catalog import Catalog
from lokal.catalog.demo import DEMO_ALIAS, DEMO_CONTEXT, DEMO_QUANT, demo_path, demo_spec
from lokal.catalog.spec import ModelSpec, Variant, is_safe_name
from lokal.config import Settings
from lokal.engines.synthetic import QUANTS, ModelShape, shape_for, write_gguf
from lokal.errors import InvalidRequest

SYNTH_NOTE = (
    "SYNTHETIC: random weights with the shape of {like}; for capacity planning and benchmarks. Its text is noise."
)

# The model `lokal serve` falls back to when nothing real can be had offline: small enough to write in a blink.
DEMO_SHAPE = ModelShape(n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_vocab=4096, n_ctx=DEMO_CONTEXT)


def synth_path(settings: Settings, alias: str, quant: str) -> Path:
    return settings.models_dir / "synthetic" / alias / f"{alias}-{quant}.gguf"


def synthesize(
    settings: Settings,
    like: str,
    quant: str = "q8_0",
    alias: str | None = None,
    *,
    shape: ModelShape | None = None,
    capabilities: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ModelSpec:
    """Write the GGUF under LOKAL_HOME/models/synthetic and add it to the user catalog."""
    shape = shape or shape_for(like)
    alias = alias or f"{like}-synthetic-{quant}"
    # Checked before writing: the alias becomes a folder name, and a bad quant would fail half-way.
    if quant not in QUANTS:
        raise InvalidRequest(f"quant must be one of {', '.join(QUANTS)}, not {quant!r}", param="quant")
    if not is_safe_name(alias) or ":" in alias:
        raise InvalidRequest(f"alias {alias!r} must be letters, digits, '.', '_', '-'", param="alias")
    path = synth_path(settings, alias, quant)
    existed = path.exists()
    write_gguf(path, shape, quant, like=like, progress=progress)  # removes its own .part on any failure
    try:
        spec = _register(settings, alias, like, quant, shape, path, capabilities)
    except BaseException:
        # Not registered: a new file nothing points at is debris. A file that was there before belongs to an
        # existing entry (same alias and quant, same seed: the same bytes), so it stays.
        if not existed:
            path.unlink(missing_ok=True)
            _prune(path.parent, settings.models_dir)
        raise
    return spec


def web_synth_path(settings: Settings, alias: str) -> Path:
    return settings.models_dir / "synthetic" / alias / "web"


def synthesize_web(
    settings: Settings,
    like: str,
    dtype: str = "fp32",
    alias: str | None = None,
    *,
    shape: ModelShape | None = None,
    capabilities: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelSpec:
    """A random-weight model of `like`'s shape in the layout transformers.js loads, registered with a
    `webgpu` variant (it runs in the playground's page, not on the server), labelled synthetic."""
    from lokal.web.synth import WEB_DTYPES, write_web_model

    shape = shape or shape_for(like)
    alias = alias or f"{like}-synthetic-web"
    if dtype not in WEB_DTYPES:
        raise InvalidRequest(f"web dtype must be one of {', '.join(WEB_DTYPES)}, not {dtype!r}", param="quant")
    if not is_safe_name(alias) or ":" in alias:
        raise InvalidRequest(f"alias {alias!r} must be letters, digits, '.', '_', '-'", param="alias")
    folder = web_synth_path(settings, alias)
    write_web_model(folder, shape, dtype, progress=progress)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    variant = Variant(
        id=f"{alias}-webgpu:1", device="webgpu", engine="web", path=str(folder), quant=dtype, size_bytes=size
    )
    spec = _synthetic_spec(
        alias, like, shape, capabilities, variant, " (synthetic, in the browser)",
        " Runs in the browser (playground, engine: this browser).",
    )  # fmt: skip
    Catalog.load(settings).add_user_model(spec)
    return spec


def _prune(folder: Path, root: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or gone): nothing to tidy
        while folder != root and folder.is_relative_to(root):
            folder.rmdir()
            folder = folder.parent


def _register(
    settings: Settings,
    alias: str,
    like: str,
    quant: str,
    shape: ModelShape,
    path: Path,
    capabilities: list[str] | None,
) -> ModelSpec:
    variant = Variant(
        id=f"{alias}-cpu:1", device="cpu", engine="llamacpp", path=str(path), quant=quant,
        size_bytes=path.stat().st_size,
    )  # fmt: skip
    spec = _synthetic_spec(alias, like, shape, capabilities, variant, " (synthetic)", "")
    Catalog.load(settings).add_user_model(spec)
    return spec


def _synthetic_spec(
    alias: str,
    like: str,
    shape: ModelShape,
    capabilities: list[str] | None,
    variant: Variant,
    display_suffix: str,
    description_suffix: str,
) -> ModelSpec:
    """The catalog entry of a random-weight model: labelled synthetic, with the shape's size and context."""
    return ModelSpec(
        alias=alias,
        display_name=alias + display_suffix,
        publisher="lokal-synthetic",
        license="none",
        context_length=min(shape.n_ctx, 8192),
        parameters_b=round(shape.parameters / 1e9, 3),
        capabilities=capabilities or ["general"],
        synthetic=True,
        description=SYNTH_NOTE.format(like=like) + description_suffix,
        variants=[variant],
    )


def ensure_demo(settings: Settings) -> ModelSpec:
    """Write the demo GGUF if it is missing. The user catalog is not touched: `Catalog.load` lists the demo
    while its file exists (lokal.catalog.demo)."""
    spec = demo_spec(settings)
    if spec is not None:
        return spec
    write_gguf(demo_path(settings), DEMO_SHAPE, DEMO_QUANT, like="demo")  # removes its own .part on failure
    spec = demo_spec(settings)
    assert spec is not None  # just written
    return spec


__all__ = ["DEMO_ALIAS", "SYNTH_NOTE", "ensure_demo", "synth_path", "synthesize", "synthesize_web", "web_synth_path"]
