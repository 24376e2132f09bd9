"""An isolated LOKAL_HOME per test, online (local servers only) and pinned to cpu unless a test says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lokal.config import Settings, get_settings
from tests.catalog.fileserver import FileServer


@pytest.fixture
def settings(home: Path) -> Settings:
    return get_settings()


@pytest.fixture
def fileserver() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.fixture
def hub(fileserver: FileServer, monkeypatch: pytest.MonkeyPatch, home: Path) -> FileServer:
    """The file server standing in for huggingface.co (LOKAL_HF_ENDPOINT points at it)."""
    monkeypatch.setenv("LOKAL_HF_ENDPOINT", fileserver.url)
    get_settings.cache_clear()
    return fileserver
