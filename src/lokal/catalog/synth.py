"""`lokal model synth`: write a random-weight model shaped like a real one (a GGUF, an ONNX GenAI folder or a
transformers.js folder) and register it, labelled synthetic; and the offline demo model `lokal serve` writes."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from lokal.catalog.catalog import Catalog
from lokal.catalog.demo import (
    DEMO_ALIAS,
    DEMO_CONTEXT,
    DEMO_ONNX_PRECISION,
    DEMO_QUANT,
    demo_onnx_path,
    demo_path,
    demo_spec,
    demo_written,
)
from lokal.catalog.spec import ModelSpec, Variant, is_safe_name
from lokal.config import Settings
from lokal.errors import InvalidRequest
from lokal.gguf.synthetic import QUANTS, ModelShape, shape_for, write_gguf

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


ONNX_PRECISIONS = ("int4", "fp32")


def onnx_synth_path(settings: Settings, alias: str) -> Path:
    return settings.models_dir / "synthetic" / alias / "onnx"


def synthesize_onnx(
    settings: Settings,
    like: str,
    precision: str = "int4",
    alias: str | None = None,
    *,
    shape: ModelShape | None = None,
    capabilities: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelSpec:
    """A random-weight ONNX Runtime GenAI folder of `like`'s shape (written with numpy and `onnx` alone),
    registered with a `cpu` variant served by the onnx engine, labelled synthetic."""
    from lokal.onnxgen.folder import write_onnx_model

    shape = shape or shape_for(like)
    alias = alias or f"{like}-synthetic-onnx-{precision}"
    if precision not in ONNX_PRECISIONS:
        raise InvalidRequest(
            f"onnx quant must be one of {', '.join(ONNX_PRECISIONS)}, not {precision!r}", param="quant"
        )
    if not is_safe_name(alias) or ":" in alias:
        raise InvalidRequest(f"alias {alias!r} must be letters, digits, '.', '_', '-'", param="alias")
    folder = onnx_synth_path(settings, alias)
    existed = folder.exists()
    write_onnx_model(folder, shape, precision, progress=progress)  # atomic: no half-made folder on failure
    try:
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        variant = Variant(
            id=f"{alias}-cpu:1", device="cpu", engine="onnx", path=str(folder), quant=precision, size_bytes=size
        )
        spec = _synthetic_spec(alias, like, shape, capabilities, variant, " (synthetic, ONNX GenAI)", "")
        Catalog.load(settings).add_user_model(spec)
    except BaseException:
        if not existed:  # nothing points at a new folder that was not registered
            shutil.rmtree(folder, ignore_errors=True)
            _prune(folder.parent, settings.models_dir)
        raise
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


def demo_engine(installed: Callable[[str], bool] | None = None) -> str:
    """The engine the demo is written for: llama.cpp where llama-cpp-python is installed (today's GGUF demo),
    else ONNX Runtime GenAI where it is (the base install), else llama.cpp, whose missing-engine error names
    the command that installs it. `installed` defaults to the engine registry's probe (no engine imported)."""
    from lokal.runtime.engines import engine_installed

    ok = installed or engine_installed
    if ok("llamacpp"):
        return "llamacpp"
    return "onnx" if ok("onnx") else "llamacpp"


def ensure_demo(settings: Settings, engine: str | None = None) -> ModelSpec:
    """Write the demo model for `engine` (default: demo_engine()) if it is missing. The user catalog is not
    touched: `Catalog.load` lists the demo while its files exist (lokal.catalog.demo), a variant for each,
    and resolution picks the one whose engine is installed."""
    engine = engine or demo_engine()
    gguf, onnx = demo_written(settings)
    if engine == "onnx" and not onnx:
        from lokal.onnxgen.folder import write_onnx_model

        write_onnx_model(demo_onnx_path(settings), DEMO_SHAPE, DEMO_ONNX_PRECISION)  # atomic
    elif engine != "onnx" and not gguf:
        write_gguf(demo_path(settings), DEMO_SHAPE, DEMO_QUANT, like="demo")  # removes its own .part on failure
    spec = demo_spec(settings)
    assert spec is not None  # just written, or already there
    return spec


__all__ = [
    "DEMO_ALIAS",
    "SYNTH_NOTE",
    "demo_engine",
    "ensure_demo",
    "onnx_synth_path",
    "synth_path",
    "synthesize",
    "synthesize_onnx",
    "synthesize_web",
    "web_synth_path",
]
