"""The browser playground: one static page at `/` and its assets under `/static/`.

The page is plain ES modules shipped inside the package, so there is no build step and nothing is fetched from
the internet. It talks to the same OpenAI endpoints as any other client; the server adds no page-only API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from lokal.server.state import AppState

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"

# The page and its modules change with the installed version; revalidating keeps an upgraded server from
# pairing a cached old module with a new one.
_NO_STALE = {"Cache-Control": "no-cache"}


class _RevalidatedStatic(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_NO_STALE)
        return response


def install(app: FastAPI, state: AppState) -> None:
    del state  # the page reads everything it needs over HTTP

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers=_NO_STALE)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", _RevalidatedStatic(directory=STATIC_DIR), name="static")
