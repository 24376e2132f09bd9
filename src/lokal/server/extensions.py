"""Optional server features that live in their own packages. Each module exposes `install(app, state)`.

A feature whose module is missing (not built, or its extra not installed) is skipped; any other import error is
a bug and is raised.
"""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI

from lokal.server.state import AppState

log = logging.getLogger("lokal.server")

FEATURES = (
    "lokal.server.foundry",  # Foundry Local's REST contract (/foundry, /openai)
    "lokal.rag.server",  # /v1/rag/* for the playground
    "lokal.router.server",  # model="auto" and router presets
    "lokal.web.routes",  # the browser playground at /
)


def install(app: FastAPI, state: AppState) -> None:
    for name in FEATURES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                log.debug("feature %s not available: %s", name, exc)
                continue
            if exc.name in {"bm25s", "sentence_transformers", "torch", "chainlit"}:
                log.info("feature %s needs an extra that is not installed (%s)", name, exc.name)
                continue
            raise
        module.install(app, state)
