"""Hook for `lokal serve` (lokal.server.extensions): mounts the /v1/rag routes on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lokal.rag.routes import create_router

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lokal.server.state import AppState


def install(app: FastAPI, state: AppState) -> None:
    app.include_router(create_router(home=state.settings.home))
