"""create_app: builds the Services (catalog, manager, serving, metrics) and installs a list of features on one
FastAPI application; by default every feature `lokal serve` has (server/features.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lokal.catalog.cache import Cache
from lokal.catalog.live import LiveCatalog
from lokal.config import Settings, get_settings
from lokal.errors import InvalidRequest, LokalError
from lokal.runtime.engines import make_engine
from lokal.runtime.manager import Clock, ModelManager
from lokal.runtime.metrics import Metrics
from lokal.runtime.services import Feature, Services
from lokal.server.access_log import AccessLog
from lokal.server.features import default_features
from lokal.server.front_door import FrontDoor, error_response
from lokal.server.serving import Serving

log = logging.getLogger("lokal.server")


def build_services(settings: Settings, *, clock: Clock = time.monotonic) -> Services:
    """`clock` is the manager's (TTL and least-recently-used): a test moves its own instead of waiting."""
    catalog = LiveCatalog(settings)

    locate = Cache(settings).locate
    # Serving resolves with resolve_runnable: a model whose engine is missing answers engine_unavailable with the
    # install command before anything is downloaded or loaded for it.
    manager = ModelManager(
        settings, catalog.resolve_runnable, locate, lambda variant: make_engine(variant, settings), clock=clock
    )
    metrics = Metrics()
    return Services(
        settings=settings,
        catalog=catalog,
        manager=manager,
        metrics=metrics,
        serving=Serving(manager, metrics),
        locate=locate,
    )


Prepare = Callable[[threading.Event], str]  # start-up work (the default model); returns its alias


def create_app(
    settings: Settings | None = None,
    features: Sequence[Feature] | None = None,
    *,
    services: Services | None = None,
    prepare: Prepare | None = None,
) -> FastAPI:
    """`features` are installed in order (default: server.features.default_features()); `services` replaces
    the ones built from `settings` (a test's own engines). `prepare` runs in a thread once the port is open:
    /health answers 503 "starting" until it is done, so service managers and the Foundry SDK see a live server
    that is not ready yet, rather than no server."""
    settings = settings or get_settings()
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.manager.start()
        cancel = threading.Event()
        services.starting = prepare is not None
        task = asyncio.create_task(_start(services, prepare, cancel))
        try:
            yield
        finally:
            cancel.set()  # a default-model download in flight stops at its next chunk
            task.cancel()
            services.ready = False
            await services.manager.close()

    app = FastAPI(title="lokal", version="0.1.0", lifespan=lifespan)
    app.state.lokal = services

    def count(method: str, route: str, status: int) -> None:
        services.metrics.requests.labels(route, method, str(status)).inc()

    # Starlette wraps the last added middleware outermost: CORS answers preflights before the front door.
    app.add_middleware(FrontDoor, settings=settings, is_starting=lambda: services.starting, count=count)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    app.add_middleware(AccessLog)  # outermost: one info line per request, refused ones included

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

    for feature in default_features() if features is None else features:
        feature.install(app, services)
    return app


async def _start(services: Services, prepare: Prepare | None, cancel: threading.Event) -> None:
    try:
        if prepare is not None:
            services.extras["default_model"] = await asyncio.to_thread(prepare, cancel)
    except Exception:  # the server still serves whatever else is cached
        log.exception("start-up preparation failed")
    finally:
        services.starting = False
        services.ready = True


__all__ = ["create_app", "build_services", "error_response"]
