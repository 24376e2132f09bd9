"""The `lokal` command. Each verb group lives in its own module exposing `app: typer.Typer`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="lokal",
    help="Run local language models behind an OpenAI-compatible API, and measure, route and ground them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("lokal")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lokal {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="Print lokal's version and exit."
    ),
) -> None:
    """lokal: local models behind an OpenAI-compatible API (default http://127.0.0.1:5273/v1)."""


# (verb, module, help). A module is either a group (`app`) or a single command (`command`).
_GROUPS: list[tuple[str, str, str]] = [
    ("serve", "lokal.cli.serve", "Start the OpenAI-compatible server."),
    ("service", "lokal.cli.service", "Run lokal serve in the background: start, stop, status."),
    ("model", "lokal.cli.model", "Catalog, download, load and inspect models."),
    ("cache", "lokal.cli.cache", "The local model cache."),
    ("run", "lokal.cli.run", "Chat with a model (one-shot with --prompt, else interactive)."),
    ("bench", "lokal.cli.bench", "Benchmark models on any OpenAI-compatible endpoint."),
    ("compare", "lokal.cli.compare", "SLM vs LLM comparison and hybrid draft->refine."),
    ("route", "lokal.cli.route", "Route prompts to the best model by capability."),
    ("pipeline", "lokal.cli.pipeline", "Plan -> solve -> refine a task across models."),
    ("trace", "lokal.cli.trace", "Inspect router/pipeline traces."),
    ("rag", "lokal.cli.rag", "Retrieval-augmented answers over your documents."),
    ("chat", "lokal.cli.chat", "Launch the Chainlit chat UI."),
]


# Modules that add commands to a group defined elsewhere.
_EXTENSIONS = ("lokal.cli.model_runtime",)


def _register() -> None:
    for verb, module_name, help_text in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # verb not built yet; any other missing import is a real error
                continue
            raise
        if hasattr(module, "command"):
            app.command(name=verb, help=help_text)(module.command)
        else:
            app.add_typer(module.app, name=verb, help=help_text)
    for name in _EXTENSIONS:
        importlib.import_module(name)


_register()


def main() -> None:
    app()
