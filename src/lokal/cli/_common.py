"""The running lokal server a command talks to: one way to choose it, one way to call it, and its URL in
every title and error (with two servers up, "which one answered?" must never be a guess).

Choice, first match wins: --base-url, then --host/--port, then LOKAL_BASE_URL, then LOKAL_HOST/LOKAL_PORT
(the settings `lokal serve` uses). A base URL may be given with or without its /v1.

httpx is imported where a call is made, not here: `foundry service status` uses this module and must start in
a blink (the Foundry SDK polls it ten times at 0.1 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape

from lokal.client import server_root
from lokal.config import get_settings

if TYPE_CHECKING:
    import httpx

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
    if base_url or (host is None and port is None):
        return server_root(base_url)
    settings = get_settings()
    return f"http://{host or settings.host}:{port or settings.port}"


def api(base: str) -> str:
    """The OpenAI-compatible base URL of a server root."""
    return f"{base}/v1"


def api_url(base_url: str | None = None, host: str | None = None, port: int | None = None) -> str:
    """The OpenAI-compatible base URL of the server chosen by the options (`root`)."""
    return api(root(base_url, host, port))


def api_key() -> str | None:
    return get_settings().api_key


def headers(key: str | None = None) -> dict[str, str]:
    """The Authorization header for `key` (default: LOKAL_API_KEY); none without a key."""
    key = key or api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def http_client(base: str, timeout: float | None = 30.0) -> httpx.Client:
    """A client for the server at `base`, with its API key; connecting gives up after 5 s."""
    import httpx

    return httpx.Client(base_url=base, timeout=httpx.Timeout(timeout, connect=5.0), headers=headers())


def is_up(base: str, timeout: float = 0.5) -> bool:
    import httpx

    try:
        return httpx.get(base + "/health", timeout=timeout, headers=headers()).status_code == 200
    except httpx.HTTPError:
        return False


def fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(1)


def server_message(resp: httpx.Response) -> str | None:
    """The message of an error answer: OpenAI's error.message or Foundry's errorMessage; None if it has none."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("errorMessage"):
            return str(body["errorMessage"])
    return None


def call(base: str, method: str, path: str, *, timeout: float = 600, **params: Any) -> Any:
    """JSON from the server at `base`; any failure is one error line naming that server, then exit 1."""
    import httpx

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
        fail(f"{base}: {server_message(resp) or f'HTTP {resp.status_code}: {resp.text[:200]}'}")
    try:
        return resp.json()
    except ValueError:
        fail(f"the server at {base} answered {path} with something that is not JSON: {resp.text[:200]!r}")


def get(client: httpx.Client, path: str, **params: Any) -> Any:
    """GET `path` as JSON (None for an empty body); an error status raises httpx.HTTPStatusError."""
    resp = client.get(path, params={k: v for k, v in params.items() if v is not None})
    resp.raise_for_status()
    return resp.json() if resp.content else None


def json_or_none(
    base: str, method: str, path: str, *, timeout: float = 5, key: str | None = None, **kwargs: Any
) -> Any:
    """The server's JSON answer, or None when it cannot say (no server, an error status, not JSON): for
    questions whose caller has a fallback."""
    import httpx

    try:
        resp = httpx.request(method, base + path, headers=headers(key), timeout=timeout, **kwargs)
        return resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def is_synthetic(base: str, model: str) -> bool:
    """Whether the server's model card says random weights (False when it cannot say: not lokal, or gone)."""
    return card_says_synthetic(api(base), model)


def card_says_synthetic(api_url: str, model: str, key: str | None = None) -> bool:
    """is_synthetic for any OpenAI-compatible base URL (`lokal rag ask --base-url`); only lokal's cards say."""
    card = json_or_none(api_url.rstrip("/"), "GET", f"/models/{quote(model, safe='')}", key=key)
    facts = card.get("lokal") if isinstance(card, dict) else None
    return isinstance(facts, dict) and facts.get("synthetic") is True


SYNTHETIC_WARNING = "{model} is SYNTHETIC: random weights, its text is noise"
