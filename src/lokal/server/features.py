"""The server's features and the default list `create_app` installs.

A feature is an object with `name` and `install(app, services)` (lokal.runtime.services.Feature). The core
ones live here; Foundry, RAG search, routing and the playground live in their own packages and are imported
below, by name, only when the default list is built: one whose module is missing (not built, or its extra not
installed) is left out of the list; any other import error is a bug and is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, FastAPI

from lokal.runtime.services import Feature, Services
from lokal.server.routes import admin, messages, metrics, openai, responses

log = logging.getLogger("lokal.server")

EXTRAS = frozenset({"bm25s", "sentence_transformers", "torch", "chainlit"})  # optional installs, not bugs


class _Routes:
    """A feature that is one of the server's own routers."""

    name: str
    router: APIRouter

    def install(self, app: FastAPI, services: Services) -> None:
        app.include_router(self.router)


class OpenAIApi(_Routes):
    """/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

    name, router = "openai", openai.router


class MessagesApi(_Routes):
    """Anthropic's /v1/messages."""

    name, router = "messages", messages.router


class ResponsesApi(_Routes):
    """OpenAI's /v1/responses."""

    name, router = "responses", responses.router


class Admin(_Routes):
    """/health, /lokal/ps and model load/unload."""

    name, router = "admin", admin.router


class MetricsEndpoint(_Routes):
    """/metrics (Prometheus)."""

    name, router = "metrics", metrics.router


def optional(module: str, load: Callable[[], Feature]) -> Feature | None:
    """`load()`'s feature, or None when `module` (or an extra it needs) is not installed."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            log.debug("feature %s not available: %s", module, exc)
            return None
        if exc.name in EXTRAS:
            log.info("feature %s needs an extra that is not installed (%s)", module, exc.name)
            return None
        raise


def _foundry() -> Feature:
    from lokal.foundry.routes import FoundryApi

    return FoundryApi()


def _rag() -> Feature:
    from lokal.rag.server import RagSearch

    return RagSearch()


def _routing() -> Feature:
    from lokal.router.server import Routing

    return Routing()


def _playground() -> Feature:
    from lokal.web.routes import Playground

    return Playground()


# Order is route order: the playground mounts /static and serves / , so it comes last.
OPTIONAL: tuple[tuple[str, Callable[[], Feature]], ...] = (
    ("lokal.foundry.routes", _foundry),  # Foundry Local's REST contract (/foundry, /openai)
    ("lokal.rag.server", _rag),  # /v1/rag/* for the playground
    ("lokal.router.server", _routing),  # model="auto" and router presets
    ("lokal.web.routes", _playground),  # the browser playground at /
)


def core_features() -> list[Feature]:
    return [OpenAIApi(), MessagesApi(), ResponsesApi(), Admin(), MetricsEndpoint()]


def default_features() -> list[Feature]:
    """Everything `lokal serve` installs: the core, then each optional feature that imports."""
    found = [optional(module, load) for module, load in OPTIONAL]
    return [*core_features(), *(f for f in found if f is not None)]
