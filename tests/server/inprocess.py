"""The real app under a real uvicorn in this process, with engines the test chooses: what a subprocess server
cannot show (a first token that takes long, an engine that fails mid-answer, an upstream that parses its own
tool calls) with the real llama.cpp engine underneath where it matters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.engines.base import Engine
from lokal.runtime.manager import ModelManager
from lokal.server.app import build_services, create_app
from lokal.server.serving import Serving
from tests.support.models import write_catalog
from tests.support.server import run_app


@contextmanager
def serve(home: Path, entries: list[dict[str, Any]], make_engine: Callable[[Variant], Engine]) -> Iterator[str]:
    """A server on the catalog `entries`, each variant's engine made by `make_engine`; yields its base URL."""
    write_catalog(home, entries)
    settings = Settings(home=home, offline=True)  # type: ignore[call-arg]
    services = build_services(settings)
    services.manager = ModelManager(settings, services.catalog.resolve, services.locate, make_engine)
    services.serving = Serving(services.manager, services.metrics)
    with run_app(create_app(settings, services=services)) as url:
        yield url
