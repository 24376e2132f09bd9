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
from lokal.errors import LokalError

DEFAULT_MODEL = "qwen2.5-0.5b"


def prepare_default(
    settings: Settings, name: str | None, *, pull: bool, console: Console, cancel: threading.Event | None = None
) -> str:
    """Return the alias `lokal serve` offers first. Never fails: the fallback is the synthetic demo model."""
    name = name or DEFAULT_MODEL
    catalog = Catalog.load(settings)
    reason = ""
    try:
        spec, variant = catalog.resolve(name)
        if Cache(settings).is_cached(variant):
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
