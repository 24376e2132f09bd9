"""The running lokal server a command talks to: one way to choose it, one way to call it, and its URL in
every title and error (with two servers up, "which one answered?" must never be a guess).

Choice, first match wins: --base-url, then --host/--port, then LOKAL_BASE_URL, then LOKAL_HOST/LOKAL_PORT
(the settings `lokal serve` uses). A base URL may be given with or without its /v1.
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from lokal.config import env_value, get_settings

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        "-u",
        envvar="LOKAL_BASE_URL",
        help="The lokal server, e.g. http://127.0.0.1:5273 (/v1 optional) [LOKAL_HOST:LOKAL_PORT].",
        show_default=False,
    ),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Server host (with --port).", show_default=False)]
PortOpt = Annotated[int | None, typer.Option("--port", help="Server port [5273].", show_default=False)]


def root(base_url: str | None = None, host: str | None = None, port: int | None = None) -> str:
    """The server's root URL (no /v1, no trailing slash) by the precedence in the module docstring."""
    if base_url:
        url = base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url
    settings = get_settings()
    if host is not None or port is not None:
        return f"http://{host or settings.host}:{port or settings.port}"
    env = env_value("LOKAL_BASE_URL")
    if env:
        return root(env)
    return settings.base_url


def api(base: str) -> str:
    """The OpenAI-compatible base URL of a server root."""
    return f"{base}/v1"


def api_key() -> str | None:
    return get_settings().api_key


def headers() -> dict[str, str]:
    key = api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def is_up(base: str, timeout: float = 0.5) -> bool:
    try:
        return httpx.get(base + "/health", timeout=timeout, headers=headers()).status_code == 200
    except httpx.HTTPError:
        return False


def fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(1)


def call(base: str, method: str, path: str, *, timeout: float = 600, **params: Any) -> Any:
    """JSON from the server at `base`; any failure is one error line naming that server, then exit 1."""
    url = base + path
    try:
        resp = httpx.request(
            method,
            url,
            params={k: v for k, v in params.items() if v is not None},
            headers=headers(),
            timeout=timeout,
        )
    except httpx.ConnectError:
        fail(f"no lokal server at {base}; start one with `lokal serve`, or point at yours with --base-url")
    except httpx.HTTPError as exc:
        fail(f"{base}: {exc or type(exc).__name__}")
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {resp.status_code}: {resp.text[:200]}"
        fail(f"{base}: {message}")
    try:
        return resp.json()
    except ValueError:
        fail(f"the server at {base} answered {path} with something that is not JSON: {resp.text[:200]!r}")


def is_synthetic(base: str, model: str) -> bool:
    """Whether the server's model card says random weights (False when it cannot say: not lokal, or gone)."""
    try:
        resp = httpx.get(f"{api(base)}/models/{quote(model, safe='')}", headers=headers(), timeout=5)
        facts = resp.json().get("lokal") if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return isinstance(facts, dict) and facts.get("synthetic") is True


SYNTHETIC_WARNING = "{model} is SYNTHETIC: random weights, its text is noise"
