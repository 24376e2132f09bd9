"""What `lokal serve` makes ready before it listens: the default model, or a labelled synthetic stand-in.

It says what it did in its return value and through `downloading`; telling the user is the command's job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.download import Progress, download
from lokal.catalog.spec import Variant
from lokal.catalog.synth import ensure_demo
from lokal.config import Settings
from lokal.errors import LokalError, ModelNotFound

DEFAULT_MODEL = "qwen2.5-0.5b"

# Called with the alias and variant before a download starts; what it returns is entered for the download's
# duration and hears its progress.
Downloading = Callable[[str, Variant], AbstractContextManager[Progress | None]]


@dataclass(frozen=True, slots=True)
class Prepared:
    """The model `lokal serve` offers first, and how it became ready."""

    alias: str
    how: Literal["cached", "downloaded", "demo"]
    variant_id: str = ""  # the real model's variant; empty for the demo
    reason: str = ""  # demo: why no real model is available
    wanted: str = ""  # demo: the model that was wanted, for the hint on getting it


def close_matches(catalog: Catalog, name: str) -> list[str]:
    import difflib

    aliases = catalog.aliases()
    by_lower = {a.lower(): a for a in aliases}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    found += [a.lower() for a in aliases if name.lower() in a.lower() and a.lower() not in found]
    return [by_lower[f] for f in found[:5]]


def check_requested(settings: Settings, name: str, *, pull: bool) -> None:
    """Refuse, before anything listens, a model the user named that cannot be served: an alias the catalog
    does not know (with the closest ones), or one not cached while downloads are off. Only the implicit
    default falls back to the synthetic demo: a model someone asked for by name must never be noise."""
    catalog = Catalog.load(settings)
    try:
        spec, variant = catalog.resolve_runnable(name)
    except ModelNotFound:
        near = close_matches(catalog, name)
        hint = f"did you mean {', '.join(near)}?" if near else f"known aliases: {', '.join(catalog.aliases())}"
        raise ModelNotFound(
            f"model {name!r} is not in the catalog; {hint} (`lokal model list` shows them all; bring a GGUF "
            "with `lokal model add PATH --alias NAME`)",
            param="model",
        ) from None
    if variant.needs_artifact and not Cache(settings).is_cached(variant) and (not pull or settings.offline):
        raise ModelNotFound(
            f"model {spec.alias!r} is not cached and downloads are off (--no-pull or LOKAL_OFFLINE); "
            f"get it with `lokal model download {spec.alias}`",
            param="model",
        )


def prepare_default(
    settings: Settings,
    name: str | None,
    *,
    pull: bool,
    cancel: threading.Event | None = None,
    downloading: Downloading | None = None,
) -> Prepared:
    """The model `lokal serve` offers first. With no name asked for it never fails: the fallback is the
    synthetic demo model. A name asked for (checked by `check_requested` first) fails when its download does."""
    requested = name is not None
    name = name or DEFAULT_MODEL
    catalog = Catalog.load(settings)
    reason = ""
    try:
        spec, variant = catalog.resolve_runnable(name)
        if variant.is_upstream or Cache(settings).is_cached(variant):
            return Prepared(spec.alias, "cached", variant.id)
        if pull and not settings.offline:
            with (downloading or _quietly)(spec.alias, variant) as progress:
                download(variant, settings, progress=progress, timeout=15.0, cancel=cancel)
            return Prepared(spec.alias, "downloaded", variant.id)
        reason = "downloads are off (--no-pull or LOKAL_OFFLINE)"
    except LokalError as exc:
        if requested:
            raise
        reason = exc.message
    except KeyboardInterrupt:
        reason = "download interrupted"
    demo = ensure_demo(settings)
    return Prepared(demo.alias, "demo", reason=reason, wanted=name)


def _quietly(alias: str, variant: Variant) -> AbstractContextManager[Progress | None]:
    return nullcontext()
