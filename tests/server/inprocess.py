"""The real app under a real uvicorn in this process, with engines the test chooses: what a subprocess server
cannot show (a first token that takes long, an engine that fails mid-answer, an upstream that parses its own
tool calls) with the real llama.cpp engine underneath where it matters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.engines.base import Engine
from lokal.runtime.manager import ModelManager
from lokal.server.app import build_state, create_app
from lokal.server.serving import Serving
from tests.support.models import write_catalog
from tests.support.server import free_port


@contextmanager
def serve(home: Path, entries: list[dict[str, Any]], make_engine: Callable[[Variant], Engine]) -> Iterator[str]:
    """A server on the catalog `entries`, each variant's engine made by `make_engine`; yields its base URL."""
    write_catalog(home, entries)
    settings = Settings(home=home, offline=True)  # type: ignore[call-arg]
    state = build_state(settings)
    state.manager = ModelManager(settings, state.catalog.resolve, state.locate, make_engine)
    state.serving = Serving(state.manager, state.metrics)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, state), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
