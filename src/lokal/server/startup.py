"""What `lokal serve` makes ready before it listens: the default model, or a labelled synthetic stand-in."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.download import download
from lokal.catalog.synth import DEMO_ALIAS, ensure_demo
from lokal.config import Settings
from lokal.errors import LokalError, ModelNotFound

DEFAULT_MODEL = "qwen2.5-0.5b"


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
    settings: Settings, name: str | None, *, pull: bool, console: Console, cancel: threading.Event | None = None
) -> str:
    """Return the alias `lokal serve` offers first. With no name asked for it never fails: the fallback is the
    synthetic demo model. A name asked for (checked by `check_requested` first) fails when its download does."""
    requested = name is not None
    name = name or DEFAULT_MODEL
    catalog = Catalog.load(settings)
    reason = ""
    try:
        spec, variant = catalog.resolve_runnable(name)
        if variant.is_upstream or Cache(settings).is_cached(variant):
            console.print(f"default model: [bold]{spec.alias}[/] ({variant.id}, cached)")
            return spec.alias
        if pull and not settings.offline:
            console.print(f"default model {spec.alias} is not cached; downloading {variant.id} ...")
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task(spec.alias, total=variant.size_bytes)
                download(
                    variant,
                    settings,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    timeout=15.0,
                    cancel=cancel,
                )
            console.print(f"default model: [bold]{spec.alias}[/] (downloaded)")
            return spec.alias
        reason = "downloads are off (--no-pull or LOKAL_OFFLINE)"
    except LokalError as exc:
        if requested:
            console.print(f"[bold red]error:[/] model {name} could not be made ready: {exc.message}")
            raise
        reason = exc.message
    except KeyboardInterrupt:
        reason = "download interrupted"
    demo = ensure_demo(settings)
    console.print(
        Panel.fit(
            f"No real model is available: {reason}\n\n"
            f"Serving [bold]{DEMO_ALIAS}[/] instead: a SYNTHETIC model with random weights. "
            "Its text is noise; it exists so the API, playground and tools work offline.\n\n"
            f"Get a real model:  [bold]lokal model download {name}[/]  (needs the Hugging Face hub)\n"
            "or bring a GGUF:   [bold]lokal model add PATH --alias NAME[/]",
            title="lokal: synthetic demo model",
            border_style="yellow",
        )
    )
    return demo.alias
