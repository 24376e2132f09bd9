"""Fixtures for router tests: fake OpenAI-compatible servers on 127.0.0.1, and one MiniLM for the session."""

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
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM exported to ONNX once per session: the router's default encoder."""
    from lokal.router.onnx_minilm import ONNX_NAME, load_onnx_minilm

    folder = tmp_path_factory.mktemp("router-onnx")
    load_onnx_minilm(folder)
    assert (folder / ONNX_NAME).is_file()
    return folder


@pytest.fixture(scope="session")
def embedder(onnx_dir: Path) -> Any:
    """The router's encoder (one-thread onnxruntime): on a busy 2-core box torch with 2 threads is ~5x slower."""
    from lokal.router.onnx_minilm import load_onnx_minilm

    return load_onnx_minilm(onnx_dir)


@pytest.fixture(scope="session")
def intent_engine(embedder: Any) -> IntentEngine:
    eng = IntentEngine(None, encoder_factory=lambda: embedder)
    assert eng.warm()
    return eng


@pytest.fixture
def write_catalog() -> Callable[[Path, dict[str, Any]], Path]:
    def write(path: Path, data: dict[str, Any]) -> Path:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write
