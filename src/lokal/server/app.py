"""create_app: wires settings, catalog, runtime, serving and routes into one FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lokal.catalog.cache import Cache
from lokal.catalog.live import LiveCatalog
from lokal.catalog.spec import Variant
from lokal.config import Settings, get_settings
from lokal.errors import AuthenticationError, InvalidRequest, LokalError, Overloaded
from lokal.runtime.engines import make_engine
from lokal.runtime.manager import ModelManager
from lokal.server.body import validation_message
from lokal.server.metrics import Metrics
from lokal.server.routes import admin, openai
from lokal.server.serving import Serving
from lokal.server.state import AppState

log = logging.getLogger("lokal.server")

# Paths that answer without an API key: liveness probes and the static playground.
_OPEN_PATHS = ("/health", "/metrics", "/static/", "/favicon.ico")


def locate_artifact(cache: Cache, variant: Variant) -> Path | None:
    if variant.engine == "remote":
        return None
    path = cache.path_for(variant)
    return path if path.exists() else None


def error_response(exc: LokalError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


def build_state(settings: Settings) -> AppState:
    catalog = LiveCatalog(settings)

    cache = Cache(settings)

    def locate(variant: Variant) -> Path | None:
        return locate_artifact(cache, variant)

    manager = ModelManager(settings, catalog.resolve, locate, lambda variant: make_engine(variant, settings))
    metrics = Metrics()
    return AppState(
        settings=settings,
        catalog=catalog,
        manager=manager,
        metrics=metrics,
        serving=Serving(manager, metrics),
        locate=locate,
    )


def create_app(settings: Settings | None = None, state: AppState | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = state or build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.manager.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await state.manager.close()

    app = FastAPI(title="lokal", version="0.1.0", lifespan=lifespan)
    app.state.lokal = state
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    @app.middleware("http")
    async def auth_and_count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        key = settings.api_key
        if key and path != "/" and not path.startswith(_OPEN_PATHS) and request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            if given != f"Bearer {key}":
                return error_response(AuthenticationError("Incorrect API key provided."))
        response: Response = await call_next(request)
        if path.startswith("/v1/"):
            state.metrics.requests.labels(path, "", str(response.status_code)).inc()
        return response

    @app.exception_handler(LokalError)
    async def lokal_error(_: Request, exc: LokalError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        return error_response(InvalidRequest(f"{loc}: {err.get('msg', 'invalid value')}", param=loc or None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        body = {"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = {
            "error": {
                "message": f"internal error: {type(exc).__name__}: {exc}",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=500)

    app.include_router(openai.router)
    app.include_router(admin.router)
    _install_optional(app, state)
    return app


def _install_optional(app: FastAPI, state: AppState) -> None:
    """Features that live in other packages (router, RAG, playground, Foundry): each registers itself."""
    from lokal.server import extensions

    extensions.install(app, state)


__all__ = ["create_app", "build_state", "validation_message"]
