"""Catalogs of echo models (lokal.engines.echo), a clock a test moves by hand, and the app in this process over
httpx.ASGITransport: serving, manager, routing and Foundry logic tested in milliseconds, no port, no engine build."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from lokal.config import Settings
from lokal.runtime.services import Feature, Services
from lokal.server.app import build_services, create_app
from tests.support.models import write_catalog


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def echo_entry(
    home: Path,
    alias: str,
    *,
    capabilities: Sequence[str] = ("general",),
    task: str = "chat-completion",
    context_length: int = 2048,
    delay_s: float = 0.0,
    memory_bytes: int = 0,
    load_s: float = 0.0,
    load_error: str = "",
) -> dict[str, Any]:
    """A catalog entry served by the echo engine; its knobs go in its file, padded to memory_bytes: the manager
    estimates what a model needs from its file's size, as it would for weights."""
    knob_file = home / "echo" / f"{alias}.json"
    knob_file.parent.mkdir(parents=True, exist_ok=True)
    knobs: dict[str, Any] = {"delay_s": delay_s, "load_s": load_s, "load_error": load_error}
    if memory_bytes:
        knobs["memory_bytes"] = memory_bytes
    knob_file.write_text(json.dumps(knobs).ljust(memory_bytes))
    return {
        "alias": alias,
        "publisher": "lokal-tests",
        "license": "none",
        "task": task,
        "context_length": context_length,
        "capabilities": list(capabilities),
        "synthetic": True,
        "description": "echoes the last user message",
        "variants": [{"id": f"{alias}:1", "device": "cpu", "engine": "echo", "path": str(knob_file)}],
    }


def echo_settings(home: Path, entries: list[dict[str, Any]], **overrides: Any) -> Settings:
    write_catalog(home, entries)
    return Settings(home=home, offline=True, **overrides)


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (manager started, ready once start-up work is done), over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            services: Services = app.state.lokal
            for _ in range(200):
                if services.ready:
                    break
                await asyncio.sleep(0.01)
            yield client


@asynccontextmanager
async def echo_app(
    settings: Settings, features: Sequence[Feature] | None = None, clock: Clock | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """A whole server (or `features` of it) on `settings`, its manager on `clock`; yields a client and the
    services behind it."""
    services = build_services(settings, clock=clock or Clock())
    async with asgi_client(create_app(settings, features, services=services)) as client:
        yield client, services
