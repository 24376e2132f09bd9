"""The browser playground: one static page at `/`, its assets under `/static/`, and the web models.

The page is plain ES modules shipped inside the package, so there is no build step and nothing is fetched from
the internet. It talks to the same OpenAI endpoints as any other client; for in-browser inference it also
reads the catalog's web models (`/lokal/web/models`) and their files (`/static/models/<id>/<file>`), which
transformers.js fetches itself: it can send no Authorization header, so with an API key set those files want
the key in the `lokal_web_key` cookie the page sets when the key is entered.

Everything is served with COOP/COEP (cross-origin isolation), which ONNX Runtime Web needs for WASM threads.
"""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from lokal.errors import AuthenticationError
from lokal.runtime.services import Services
from lokal.web.models import WebModels, content_type

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"
KEY_COOKIE = "lokal_web_key"

# The page and its modules change with the installed version; revalidating keeps an upgraded server from
# pairing a cached old module with a new one.
_NO_STALE = {"Cache-Control": "no-cache"}
# Cross-origin isolated (SharedArrayBuffer, hence WASM threads); everything the page loads is same-origin.
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Set here, not guessed: `mimetypes` reads the OS's tables (Windows' registry often maps .js to text/plain, which
# a browser refuses for a module) and other libraries in the process may register their own.
_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


class _RevalidatedStatic(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_NO_STALE)
        response.headers.update(ISOLATION)
        kind = _TYPES.get(Path(path).suffix)
        if kind:
            response.headers["content-type"] = kind
        return response


class Playground:
    """The feature: the page, its assets and the web models."""

    name = "playground"

    def install(self, app: FastAPI, services: Services) -> None:
        models = WebModels(services.settings, services.catalog.specs)
        key = services.settings.api_key

        def check_key(request: Request) -> None:
            if not key:
                return
            given = request.cookies.get(KEY_COOKIE, "")
            bearer = request.headers.get("authorization", "")
            if not (
                hmac.compare_digest(given.encode(), key.encode())
                or hmac.compare_digest(bearer.encode(), f"Bearer {key}".encode())
            ):
                raise AuthenticationError("web model files need the API key: enter it under Settings → API key")

        @app.get("/", include_in_schema=False)
        async def playground() -> FileResponse:
            return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers={**_NO_STALE, **ISOLATION})

        @app.get("/favicon.ico", include_in_schema=False)
        async def favicon() -> FileResponse:
            return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml", headers=ISOLATION)

        @app.get("/lokal/web/models", include_in_schema=False)
        async def web_models() -> JSONResponse:
            return JSONResponse({"object": "list", "data": [m.card() for m in models.listing()]})

        @app.get("/lokal/web/models/{model_id}", include_in_schema=False)
        async def web_model(model_id: str) -> JSONResponse:
            model = models.get(model_id)
            if model.id == models.minilm().id:  # exported from the packaged weights on first use (seconds)
                await asyncio.to_thread(models.ensure_minilm)
            return JSONResponse(model.card())

        @app.post("/lokal/web/models/{model_id}/pull", include_in_schema=False)
        async def web_pull(model_id: str) -> JSONResponse:
            return JSONResponse((await models.pull(model_id)).card())

        # Before the /static mount, so that it wins; under /static/ so the front door lets the page's own
        # fetches through (this handler checks the key itself). FileResponse answers Range requests.
        @app.get("/static/models/{model_id}/{file_path:path}", include_in_schema=False)
        async def web_file(request: Request, model_id: str, file_path: str) -> FileResponse:
            check_key(request)
            path = await models.file(model_id, file_path)
            # Weights change only when re-written (synth, pull): the page's Cache Storage keeps them anyway.
            return FileResponse(path, media_type=content_type(path), headers={**_NO_STALE, **ISOLATION})

        app.mount("/static", _RevalidatedStatic(directory=STATIC_DIR), name="static")
