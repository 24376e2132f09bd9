"""`lokal run ALIAS [--prompt TEXT]`: one-shot or interactive chat, streamed.

Uses the running server when there is one (so the model stays warm); otherwise loads the model in-process.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, cast

import typer
from rich.console import Console

from lokal.cli import target
from lokal.cli.model import fail, readable_errors
from lokal.cli.target import BaseUrlOpt, HostOpt, PortOpt
from lokal.config import get_settings
from lokal.engines.base import ChatMessage, GenerationRequest

console = Console(stderr=True, highlight=False)


# A one-shot with no --max-tokens stops here rather than filling the context (thousands of tokens of noise).
ONE_SHOT_MAX_TOKENS = 512

HELP = '''commands:
  /set temperature X | /set system TEXT | /set max_tokens N   change the session's settings
  /show                                                        the settings and history length
  /reset                                                       forget the conversation (asks first)
  """                                                          start or end a multi-line message
  /bye                                                         leave (also /exit, /quit, Ctrl-D)
  Ctrl-C stops the answer being written and keeps the conversation.'''


class _Local:
    """The model loaded in this process, for when no server is running."""

    def __init__(self, name: str) -> None:
        from lokal.catalog.cache import Cache
        from lokal.catalog.catalog import Catalog
        from lokal.errors import ModelNotDownloaded
        from lokal.runtime.engines import make_engine

        settings = get_settings()
        self.spec, variant = Catalog.load(settings).resolve_runnable(name)
        # An upstream has no file; its async engine runs on a loop of its own behind the sync `generate`.
        path = Cache(settings).path_for(variant) if variant.needs_artifact else None
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
        self.client = OpenAI(base_url=target.api(base), api_key=target.api_key() or "lokal", max_retries=0)

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
            for chunk in chunks:
                for ch in chunk.choices:
                    if ch.delta.content:
                        yield ch.delta.content
        except APIError as exc:
            fail(str(exc.message))


class Session:
    """One conversation: its settings, its history, and what `/set` and `/show` change and print."""

    def __init__(self, system: str | None, max_tokens: int | None, temperature: float) -> None:
        self.system = system
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.history: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def set(self, args: str) -> str:
        key, _, value = args.strip().partition(" ")
        value = value.strip()
        try:
            if key == "temperature":
                self.temperature = float(value)
            elif key in ("max_tokens", "max-tokens"):
                self.max_tokens = int(value) if value not in ("", "none") else None
            elif key == "system":
                self.system = value or None
            else:
                return "usage: /set temperature X | /set system TEXT | /set max_tokens N"
        except ValueError:
            return f"not a number: {value!r}"
        return f"set {key}"

    def show(self) -> str:
        return (
            f"temperature {self.temperature} · max_tokens {self.max_tokens or 'model default'} · "
            f"system {self.system!r} · {len(self.history) // 2} exchanges in history"
        )


def _read_message(first: str) -> str:
    '''A line, or with """ every line up to the closing """ (like `ollama run`).'''
    if not first.strip().startswith('"""'):
        return first
    body = first.strip()[3:]
    if body.endswith('"""'):
        return body[:-3]
    lines = [body] if body else []
    while True:
        line = input("... ")
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines)
        lines.append(line)


def command(
    model: Annotated[str, typer.Argument(help="Alias or variant id.")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="One-shot prompt; omit for a chat.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help=f"Most tokens per answer [{ONE_SHOT_MAX_TOKENS} for a one-shot].")
    ] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    local: Annotated[bool, typer.Option(help="Load in this process even if a server runs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print time to first token and tokens/s.")] = False,
    base_url: BaseUrlOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Chat with a model: one-shot with --prompt, interactive otherwise (/help for commands)."""
    base = target.root(base_url, host, port)
    with readable_errors():
        remote = not local and target.is_up(base)
        with console.status(f"loading {model}…" if not remote else f"connecting to {model} on {base}…"):
            runner: _Local | _Remote = _Remote(model, base) if remote else _Local(model)
        synthetic = runner.spec.synthetic if isinstance(runner, _Local) else target.is_synthetic(base, model)
        where = f"on {base}" if remote else "in this process"
        if synthetic:
            console.print(f"[yellow]{target.SYNTHETIC_WARNING.format(model=model)}[/]")
        session = Session(system, max_tokens, temperature)

        def answer(text: str) -> None:
            session.history.append({"role": "user", "content": text})
            parts: list[str] = []
            t0 = time.perf_counter()
            first: float | None = None
            limit = session.max_tokens or (ONE_SHOT_MAX_TOKENS if prompt is not None else None)
            try:
                for piece in runner.stream(session.messages(), limit, session.temperature):
                    first = first or time.perf_counter()
                    parts.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                console.print("[dim](stopped; the conversation is kept)[/]")
            sys.stdout.write("\n")
            session.history.append({"role": "assistant", "content": "".join(parts)})
            if verbose and first is not None:
                # Chunks, not tokens: a streamed chunk carries one token on lokal and llama.cpp servers.
                elapsed = time.perf_counter() - first
                rate = f"{(len(parts) - 1) / elapsed:.1f} chunks/s" if len(parts) > 1 and elapsed > 0 else "-"
                console.print(f"[dim]TTFT {(first - t0) * 1000:.0f} ms · {len(parts)} chunks · {rate}[/]")

        if prompt is not None:
            answer(prompt)
            return
        console.print(f"chatting with [bold]{model}[/] {where} — /help for commands, /bye to leave")
        while True:
            try:
                line = _read_message(input(">>> "))
            except EOFError:
                break
            except KeyboardInterrupt:
                console.print("[dim](Ctrl-D or /bye to leave)[/]")
                continue
            cmd = line.strip()
            if cmd in ("/bye", "/exit", "/quit"):
                break
            if cmd in ("/help", "/?"):
                console.print(HELP, markup=False)
            elif cmd == "/show":
                console.print(session.show(), markup=False)
            elif cmd.startswith("/set"):
                console.print(session.set(cmd[4:]), markup=False)
            elif cmd == "/reset":
                if input("forget the conversation? [y/N] ").strip().lower() in ("y", "yes"):
                    session.history.clear()
                    console.print("conversation forgotten")
            elif cmd.startswith("/"):
                console.print(f"unknown command {cmd.split()[0]}; /help lists them", markup=False)
            elif cmd:
                answer(line)
