"""Fixtures for router tests: fake OpenAI-compatible servers on 127.0.0.1, and the intent engine on MiniLM."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lokal.router.engine import IntentEngine
from tests.router.fakes import FakeOpenAI


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeOpenAI]]:
    started: list[FakeOpenAI] = []

    def make(**kwargs: Any) -> FakeOpenAI:
        f = FakeOpenAI(**kwargs).start()
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


@pytest.fixture(scope="session")
def intent_engine(onnx_encoder: Any) -> IntentEngine:
    eng = IntentEngine(None, encoder_factory=lambda: onnx_encoder)
    assert eng.warm()
    return eng


@pytest.fixture
def write_catalog() -> Callable[[Path, dict[str, Any]], Path]:
    def write(path: Path, data: dict[str, Any]) -> Path:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write
