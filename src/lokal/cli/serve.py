"""`lokal serve`: start the OpenAI-compatible server on Foundry Local's port."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn
from rich.progress import Progress as RichProgress

from lokal.config import DEFAULT_PORT, Settings

if TYPE_CHECKING:
    from lokal.catalog.download import Progress
    from lokal.catalog.spec import Variant
    from lokal.server.startup import Downloading, Prepared

console = Console(stderr=True)


def command(
    host: Annotated[str, typer.Option(envvar="LOKAL_HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LOKAL_PORT", help="Port (Foundry Local's default).")] = DEFAULT_PORT,
    home: Annotated[Path | None, typer.Option(envvar="LOKAL_HOME", help="Models, catalog and traces folder.")] = None,
    max_loaded: Annotated[int | None, typer.Option(help="Most models loaded at once (LRU eviction).")] = None,
    memory_budget: Annotated[int | None, typer.Option(help="Memory budget for loaded models, MiB.")] = None,
    ttl: Annotated[float | None, typer.Option(help="Unload a model after this many idle seconds.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LOKAL_API_KEY", help="Require this Bearer key.")] = None,
    cors: Annotated[
        list[str] | None, typer.Option(help="Web origin allowed to call the API from a browser (repeatable).")
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Host name to answer besides localhost and IP addresses (repeatable; '*' = any)."),
    ] = None,
    max_body_mb: Annotated[float | None, typer.Option(help="Largest request body, MiB (default 8).")] = None,
    metrics_public: Annotated[
        bool | None, typer.Option("--metrics-public", help="Serve /metrics without the API key.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(envvar="LOKAL_DEFAULT_MODEL", help="Model to make ready at start.")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option(help="Concurrent sequences per llama.cpp model (continuous batching).")
    ] = None,
    pull: Annotated[bool, typer.Option(help="Download the default model when it is missing.")] = True,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info (one line per request and model load) or debug.")
    ] = "info",
) -> None:
    """Start the server. With no model available offline it still starts, on a labelled synthetic demo model."""
    import uvicorn

    from lokal.config import use_settings

    # The options win over the LOKAL_* variables (Settings reads those for every field not given here).
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "home": home or None,
        "max_loaded_models": max_loaded or None,
        "memory_budget_mb": memory_budget or None,
        "ttl_seconds": ttl,
        "api_key": api_key,
        "cors_origins": cors or None,
        "allowed_hosts": allowed_host or None,
        "max_body_mb": max_body_mb or None,
        "metrics_public": True if metrics_public else None,
        "parallel": parallel or None,
    }
    # The process's own settings: code that is not handed them (get_settings()) sees the options too.
    settings = use_settings(Settings(**{k: v for k, v in options.items() if v is not None}))
    if model is not None:
        _check_model(settings, model, pull)
    # The port is taken before anything says "starting": a busy port is one clear error, nothing else printed.
    sock = bind(host, port)

    from lokal.errors import LokalError
    from lokal.server.app import create_app
    from lokal.server.startup import prepare_default

    def prepare(cancel: threading.Event) -> str:
        try:
            prepared = prepare_default(settings, model, pull=pull, cancel=cancel, downloading=download_bar(console))
        except LokalError as exc:  # only a model asked for by name fails; the default falls back to the demo
            console.print(f"[bold red]error:[/] model {model} could not be made ready: {exc.message}")
            raise
        report_prepared(console, prepared)
        console.print(f"[bold green]lokal[/] ready on [bold]{settings.base_url}/v1[/] (LOKAL_HOME={settings.home})")
        return prepared.alias

    app = create_app(settings, prepare=prepare)
    configure_logging(log_level)
    console.print(f"[bold]lokal[/] starting on {settings.base_url} (/health says 503 until the default model is ready)")
    console.print(f"playground: [bold]{settings.base_url}/[/]   API: {settings.base_url}/v1")
    # lokal's own access log (lokal.access) replaces uvicorn's: it also names the model and the tokens.
    config = uvicorn.Config(app, log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def download_bar(console: Console) -> Downloading:
    """The default model's download, said and shown as a bar that goes once it is done."""

    @contextmanager
    def downloading(alias: str, variant: Variant) -> Iterator[Progress]:
        console.print(f"default model {alias} is not cached; downloading {variant.id} ...")
        with RichProgress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(alias, total=variant.size_bytes)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    return downloading


def report_prepared(console: Console, prepared: Prepared) -> None:
    if prepared.how == "cached":
        console.print(f"default model: [bold]{prepared.alias}[/] ({prepared.variant_id}, cached)")
    elif prepared.how == "downloaded":
        console.print(f"default model: [bold]{prepared.alias}[/] (downloaded)")
    else:
        console.print(
            Panel.fit(
                f"No real model is available: {prepared.reason}\n\n"
                f"Serving [bold]{prepared.alias}[/] instead: a SYNTHETIC model with random weights. "
                "Its text is noise; it exists so the API, playground and tools work offline.\n\n"
                f"Get a real model:  [bold]lokal model download {prepared.wanted}[/]  (needs the Hugging Face hub)\n"
                "or bring a GGUF:   [bold]lokal model add PATH --alias NAME[/]",
                title="lokal: synthetic demo model",
                border_style="yellow",
            )
        )


def _check_model(settings: Settings, model: str, pull: bool) -> None:
    """A model named on the command line that cannot be served is an error before anything listens."""
    from lokal.errors import LokalError
    from lokal.server.startup import check_requested

    try:
        check_requested(settings, model, pull=pull)
    except LokalError as exc:
        console.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or exit 1 with what is in the way and what to do about it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn does: TIME_WAIT is no obstacle
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        busy = getattr(exc, "errno", None) in (48, 98, 10048)  # EADDRINUSE on macOS, Linux, Windows
        why = "is already in use (another lokal, or Foundry Local?)" if busy else f"cannot be opened: {exc}"
        console.print(
            f"[bold red]error:[/] {host}:{port} {why}. Stop that server, or pick another port: "
            f"lokal serve --port {port + 1}"
        )
        raise typer.Exit(1) from None
    sock.set_inheritable(True)
    return sock


def configure_logging(level: str) -> None:
    """lokal.* loggers (requests, model loads and unloads) to stderr, at the level uvicorn was given."""
    logger = logging.getLogger("lokal")
    logger.setLevel(level.upper() if level.lower() != "trace" else "DEBUG")
    if not any(getattr(h, "_lokal", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S"))
        handler._lokal = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False

