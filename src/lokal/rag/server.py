"""The RAG search feature of `lokal serve`: mounts the /v1/rag routes on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lokal.rag.routes import create_router

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lokal.runtime.services import Services


class RagSearch:
    name = "rag"

    def install(self, app: FastAPI, services: Services) -> None:
        app.include_router(create_router(home=services.settings.home))
