"""`lokal chat`: the Chainlit chat UI over a RAG collection, answering with lokal (or any OpenAI endpoint)."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from typing import Annotated

import typer

from lokal.config import child_env, get_settings
from lokal.rag.index import DEFAULT_COLLECTION


def chainlit_command(host: str, port: int, headless: bool) -> list[str]:
    # Located, not imported: importing Chainlit here would only slow the launcher down.
    spec = importlib.util.find_spec("lokal.rag.chat_app")
    assert spec is not None and spec.origin is not None
    cmd = [sys.executable, "-m", "chainlit", "run", spec.origin, "--host", host, "--port", str(port)]
    return [*cmd, "--headless"] if headless else cmd


def command(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection selected at start.")] = (
        DEFAULT_COLLECTION
    ),
    model: Annotated[str | None, typer.Option(help="Model selected at start [first offered].")] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint [lokal's /v1].")
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="LOKAL_RAG_API_KEY")] = None,
    host: Annotated[str, typer.Option(help="Interface for the chat UI.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the chat UI.")] = 8000,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=10, help="Passages per answer.")] = 4,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Similarity a passage needs to be used [0.25].")
    ] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature [0.1].")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Most tokens per answer [512].")] = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser tab.")] = True,
) -> None:
    """Launch the Chainlit chat UI (pip install "lokal[chat]")."""
    if importlib.util.find_spec("chainlit") is None:
        typer.echo('error: Chainlit is not installed: pip install "lokal[chat]"', err=True)
        raise typer.Exit(1)
    settings = get_settings()
    root = settings.home / "chat"  # Chainlit keeps its config and uploads in its working folder
    root.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    from lokal.rag.chat_setup import prepare_root

    prepare_root(root, version("chainlit"))  # lokal's readme and config: uploads on, nothing from the internet
    env = child_env(CHAINLIT_APP_ROOT=str(root), LOKAL_CHAT_COLLECTION=collection, LOKAL_CHAT_K=str(k))
    chosen = {
        "MODEL": model,
        "BASE_URL": base_url,
        "API_KEY": api_key,
        "MIN_SCORE": min_score,
        "TEMPERATURE": temperature,
        "MAX_TOKENS": max_tokens,
    }
    for key, value in chosen.items():
        if value is not None and value != "":
            env[f"LOKAL_CHAT_{key}"] = str(value)
    cmd = chainlit_command(host, port, headless=not open_browser)
    typer.echo(f"lokal chat on http://{host}:{port} (collection {collection}); Ctrl-C to stop")
    proc = subprocess.Popen(cmd, cwd=root, env=env)
    # Stopping `lokal chat` stops the UI too, instead of leaving an orphaned Chainlit server on the port.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    raise typer.Exit(code if code > 0 else 0)
