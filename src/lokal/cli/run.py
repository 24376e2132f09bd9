"""`lokal run ALIAS [--prompt TEXT]`: one-shot or interactive chat, streamed.

Uses the running server when there is one (so the model stays warm); otherwise loads the model in-process.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from lokal.cli import _common
from lokal.cli._common import BaseUrlOpt, HostOpt, PortOpt
from lokal.cli.model import readable_errors
from lokal.client import Client

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
    base = _common.root(base_url, host, port)
    remote = not local and _common.is_up(base)
    with readable_errors(), Client.connect(base) if remote else Client() as client:
        if remote:
            synthetic = _common.is_synthetic(base, model)
        else:
            with console.status(f"loading {model}…"):
                synthetic = client.load(model).synthetic
        where = f"on {base}" if remote else "in this process"
        if synthetic:
            console.print(f"[yellow]{_common.SYNTHETIC_WARNING.format(model=model)}[/]")
        session = Session(system, max_tokens, temperature)

        def answer(text: str) -> None:
            session.history.append({"role": "user", "content": text})
            parts: list[str] = []
            t0 = time.perf_counter()
            first: float | None = None
            limit = session.max_tokens or (ONE_SHOT_MAX_TOKENS if prompt is not None else None)
            try:
                for piece in client.stream(
                    model, session.messages(), max_tokens=limit, temperature=session.temperature
                ):
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
