"""Scripted OpenAI-compatible servers on 127.0.0.1 with known timing, started per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.scripted import Script, ScriptedServer

Factory = Callable[..., ScriptedServer]


@pytest.fixture
def scripted() -> Iterator[Factory]:
    started: list[ScriptedServer] = []

    def start(default: Script | None = None, scripts: dict[str, Script] | None = None, **kw: Any) -> ScriptedServer:
        srv = ScriptedServer(default, scripts, **kw).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
