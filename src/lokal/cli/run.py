"""`lokal run ALIAS [--prompt TEXT]`: one-shot or interactive chat, streamed.

Uses the running server when there is one (so the model stays warm); otherwise loads the model in-process.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, cast

import httpx
import typer
from rich.console import Console

from lokal.cli.model import fail, readable_errors
from lokal.config import get_settings
from lokal.engines.base import ChatMessage, GenerationRequest

console = Console(stderr=True)

if TYPE_CHECKING:
    from openai import Stream
    from openai.types.chat import ChatCompletionChunk


def _server_up(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


class _Local:
    """The model loaded in this process, for when no server is running."""

    def __init__(self, name: str) -> None:
        from lokal.catalog.cache import Cache
        from lokal.catalog.catalog import Catalog
        from lokal.errors import ModelNotDownloaded
        from lokal.runtime.engines import make_engine

        settings = get_settings()
        self.spec, variant = Catalog.load(settings).resolve(name)
        path = Cache(settings).path_for(variant) if variant.engine != "remote" else None
        if path is not None and not path.exists():
            raise ModelNotDownloaded(f"{self.spec.alias} is not downloaded. Run: lokal model download {name}")
        self.engine = make_engine(variant, settings, parallel=1)  # one user: no KV cache for spare slots
        self.engine.load(self.spec, variant, path)

    def stream(self, history: list[dict[str, str]], max_tokens: int | None, temperature: float) -> Iterator[str]:
        req = GenerationRequest(
            messages=tuple(ChatMessage(m["role"], m["content"]) for m in history),
            max_tokens=max_tokens,
            temperature=temperature,
        )
        for ev in self.engine.generate(req, threading.Event()):
            if ev.text:
                yield ev.text


class _Remote:
    def __init__(self, name: str, base: str) -> None:
        from openai import OpenAI

        self.name = name
        self.client = OpenAI(base_url=base + "/v1", api_key=get_settings().api_key or "lokal", max_retries=0)

    def stream(self, history: list[dict[str, str]], max_tokens: int | None, temperature: float) -> Iterator[str]:
        from openai import APIError

        try:
            chunks = self.client.chat.completions.create(
                model=self.name,
                messages=cast(Any, history),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            )
            for chunk in cast("Stream[ChatCompletionChunk]", chunks):
                for ch in chunk.choices:
                    if ch.delta.content:
                        yield ch.delta.content
        except APIError as exc:
            fail(str(exc.message))


def command(
    model: Annotated[str, typer.Argument(help="Alias or variant id.")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="One-shot prompt; omit for a chat.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    local: Annotated[bool, typer.Option(help="Load in this process even if a server runs.")] = False,
) -> None:
    """Chat with a model: one-shot with --prompt, interactive otherwise (/bye to leave, /reset to forget)."""
    base = get_settings().base_url
    with readable_errors():
        runner: _Local | _Remote = _Remote(model, base) if not local and _server_up(base) else _Local(model)
        if isinstance(runner, _Local) and runner.spec.synthetic:
            console.print(f"[yellow]{runner.spec.alias} is SYNTHETIC: random weights, its text is noise[/]")
        history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

        def answer(text: str) -> None:
            history.append({"role": "user", "content": text})
            parts = []
            for piece in runner.stream(history, max_tokens, temperature):
                parts.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": "".join(parts)})

        if prompt is not None:
            answer(prompt)
            return
        console.print(f"chatting with [bold]{model}[/] — /bye to leave, /reset to start over")
        while True:
            try:
                line = input(">>> ")
            except (EOFError, KeyboardInterrupt):
                break
            if line.strip() in ("/bye", "/exit", "/quit"):
                break
            if line.strip() == "/reset":
                del history[1 if system else 0 :]
                continue
            if line.strip():
                answer(line)
