"""The server's front door: which hosts, browser origins, keys and bodies reach a route at all.

A server on 127.0.0.1 is still reachable from every web page the user opens. Two browser attacks matter:
cross-site requests (a page POSTs `text/plain` "simple" requests, or loads `<img src=/openai/load/...>`: no
preflight, no CORS check) and DNS rebinding (a page on `evil.test` re-resolves its own name to 127.0.0.1 and is
then "same-origin" with lokal). The first is refused by Origin / Sec-Fetch-Site and by requiring
`application/json` on every body; the second by accepting only Host headers that name this machine.

Plain ASGI rather than BaseHTTPMiddleware: streamed answers pass through untouched, and the routes still see
`http.disconnect` on the receive channel (how they notice a client that left).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lokal.config import Settings
from lokal.errors import (
    AuthenticationError,
    Forbidden,
    LokalError,
    Overloaded,
    PayloadTooLarge,
    Starting,
    UnsupportedMediaType,
)

log = logging.getLogger("lokal.server")

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# The playground page and its assets: open without a key (the page asks for it) and to cross-site navigation.
PAGE_PATHS = ("/static/", "/favicon.ico")
MESSAGES_PATH = "/v1/messages"  # the Anthropic Messages API: its errors are Anthropic-shaped
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})

Counter = Callable[[str, str, int], None]  # (method, route template, status)


def error_response(exc: LokalError, path: str = "") -> JSONResponse:
    """OpenAI's error body; Anthropic's on the Messages routes, whose SDKs read that shape."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    if path.startswith(MESSAGES_PATH):
        from lokal.protocol.messages import ErrorBody

        return JSONResponse(ErrorBody.of(exc).model_dump(), status_code=exc.status_code, headers=headers)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


def split_host(host: str) -> str:
    """The name part of a Host header: `[::1]:5273` -> `::1`, `localhost:5273` -> `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: set[str]) -> bool:
    """Loopback names, IP literals (rebinding needs a DNS name) and the configured names; "*" allows any."""
    if "*" in allowed:
        return True
    name = split_host(host).rstrip(".")
    if not name:
        return False
    if name in LOOPBACK_NAMES or name.endswith(".localhost") or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(settings: Settings) -> set[str]:
    names = {split_host(h).rstrip(".") for h in settings.allowed_hosts}
    bound = split_host(settings.host)
    if bound and bound not in {"0.0.0.0", "::"}:
        names.add(bound)
    return names


def cross_site(headers: Headers, host: str, origins: set[str]) -> bool:
    """True for a browser request made by a page that is neither lokal's own nor an allowed CORS origin.

    Non-browser clients send neither Origin nor Sec-Fetch-Site and are never cross-site.
    """
    origin = headers.get("origin")
    if origin is not None:
        if "*" in origins or origin in origins:
            return False
        return origin == "null" or urlsplit(origin).netloc.lower() != host.lower()
    # No Origin: a navigation, an <img>/<script> load, a no-cors GET. Chromium and Firefox still say where from.
    return headers.get("sec-fetch-site", "none") in {"cross-site", "same-site"}


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class FrontDoor:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        is_starting: Callable[[], bool],
        count: Counter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.is_starting = is_starting
        self.count = count
        self.hosts = allowed_hosts(settings)
        self.origins = set(settings.cors_origins)
        self.max_body = int(settings.max_body_mb * 2**20)
        self._key = f"Bearer {settings.api_key}".encode() if settings.api_key else None
        self._bare_key = settings.api_key.encode() if settings.api_key else b""  # Anthropic clients: x-api-key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            receive = await self._admit(scope, headers, receive)
        except LokalError as exc:
            if scope["type"] == "http":
                await error_response(exc, scope["path"])(scope, receive, send)
                self._count(scope, exc.status_code)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await self._serve(scope, receive, send)

    async def _admit(self, scope: Scope, headers: Headers, receive: Receive) -> Receive:
        """Raise the refusal for this request, or return the receive channel the app should read."""
        path: str = scope["path"]
        method: str = scope.get("method", "GET")
        host = headers.get("host", "")
        if not host_allowed(host, self.hosts):
            raise Forbidden(
                f"Host {split_host(host)!r} is not allowed (DNS-rebinding protection). If you reach lokal "
                "through this name on purpose, start it with --allowed-host NAME (env LOKAL_ALLOWED_HOSTS).",
                code="host_not_allowed",
            )
        page = path == "/" or path.startswith(PAGE_PATHS)
        if method == "OPTIONS" and headers.get("origin") is not None:
            return receive  # a CORS preflight: CORSMiddleware (outside us) answers allowed origins
        if cross_site(headers, host, self.origins) and not (page and method in _SAFE_METHODS):
            raise Forbidden(
                f"cross-site request from {headers.get('origin') or 'another site'} refused: a web page may not "
                "drive lokal. Allow an origin with --cors ORIGIN (env LOKAL_CORS_ORIGINS).",
                code="cross_site_request",
            )
        if self.is_starting() and path != "/health" and not page:
            raise Starting("lokal is starting (preparing its default model); retry shortly", retry_after=1)
        if self._key is not None and not page and not self._open(path):
            given = headers.get("authorization", "").encode("utf-8", "replace")
            anthropic = headers.get("x-api-key", "").encode("utf-8", "replace")
            # Both compared, always: which header was sent must not change the timing.
            bearer_ok = hmac.compare_digest(given, self._key)
            anthropic_ok = hmac.compare_digest(anthropic, self._bare_key)
            if not (bearer_ok or anthropic_ok):
                raise AuthenticationError("Incorrect API key provided.")
        if method in _BODY_METHODS and scope["type"] == "http":
            return await self._read_body(headers, receive)
        return receive

    def _open(self, path: str) -> bool:
        return path == "/health" or (path == "/metrics" and self.settings.metrics_public)

    async def _read_body(self, headers: Headers, receive: Receive) -> Receive:
        """Read the whole body (every route parses it whole anyway) under the size limit, then replay it."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending: let the route see it
                return _replay(b"", receive, first=message)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and not is_json(headers.get("content-type", "")):
            raise UnsupportedMediaType(
                f"request body must be JSON sent as Content-Type: application/json "
                f"(got {headers.get('content-type') or 'no Content-Type'})",
            )
        return _replay(body, receive)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is larger than {self.settings.max_body_mb:g} MiB (raise it with --max-body-mb, "
            "env LOKAL_MAX_BODY_MB)"
        )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if status:  # bytes are out: the response is broken; the server closes this connection
                raise
            # Answering here (not in Starlette's outer error middleware, which re-raises) keeps the client's
            # keep-alive connection usable for its next request.
            log.exception("unhandled error on %s %s", scope.get("method"), scope["path"])
            status = 500
            await JSONResponse(
                {
                    "error": {
                        "message": f"internal error: {type(exc).__name__}: {exc}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=500,
            )(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        if self.count is not None:
            self.count(scope.get("method", "GET"), route_template(scope), status)


def route_template(scope: Scope) -> str:
    """The matched route's template, never the raw path: one metrics series per route, not per URL."""
    route = scope.get("route")
    if route is None:  # refused before routing: find the route it was for
        route = _match(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    path: str = scope["path"]
    if path.startswith("/static/"):
        return "/static/{path}"
    return "unmatched"


def _match(routes: Any, scope: Scope) -> Route | None:
    for candidate in routes:
        inner = getattr(candidate, "original_router", None)  # FastAPI's included routers keep their own list
        if inner is not None:
            found = _match(inner.routes, scope)
            if found is not None:
                return found
        elif isinstance(candidate, Route) and candidate.matches(scope)[0] == Match.FULL:
            return candidate
    return None


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first or {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: http.disconnect when the client goes

    return replay
