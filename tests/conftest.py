"""Session fixtures: the tiny GGUF (built once with lokal's own synthetic writer), a real lokal server, and
MiniLM exported to ONNX once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lokal.config import get_settings
from tests.support.models import build_tiny, standard_entries, write_catalog
from tests.support.server import LokalServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Parameter ids without "::": xdist's --dist loadscope takes a test's scope as its node id up to the last
    "::", so an id like `root ::= x` or `[::1]` split a module over both workers and each built the module's
    fixtures again (the ONNX sampling model three times, 12 s each, measured)."""
    if isinstance(val, str) and "::" in val:
        return val.replace("::", ": :")
    return None


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    """Closes at teardown what the test enters into it. SDK clients (openai, anthropic) sit in reference cycles,
    so one left open is closed by the garbage collector inside whichever later test it runs in, and its pooled
    socket's ResourceWarning fails that test (seen under xdist, where the later test is anybody's)."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_gguf_q8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("models-q8"), "q8_0")


@pytest.fixture(scope="session")
def lokal_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    """A real `lokal serve` with chat aliases "tiny" and "tiny-coder" and the MiniLM embedder."""
    home = tmp_path_factory.mktemp("lokal-home")
    write_catalog(home, standard_entries(tiny_gguf))
    with LokalServer(home, args=["--model", "tiny"]) as server:
        yield server


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM exported to ONNX once per session (10-15 s): the router's default encoder."""
    from lokal.embeddings.onnx import ONNX_NAME, load_onnx_minilm

    folder = tmp_path_factory.mktemp("router-onnx")
    load_onnx_minilm(folder)
    assert (folder / ONNX_NAME).is_file()
    return folder


@pytest.fixture(scope="session")
def onnx_encoder(onnx_dir: Path) -> Any:
    """The one-thread onnxruntime encoder: on a busy 2-core box torch with 2 threads is ~5x slower."""
    from lokal.embeddings.onnx import load_onnx_minilm

    return load_onnx_minilm(onnx_dir)


@pytest.fixture
def lokal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty LOKAL_HOME for in-process tests; settings are re-read from the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOKAL_HOME", str(home))
    monkeypatch.setenv("LOKAL_OFFLINE", "1")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty LOKAL_HOME for download and catalog tests: online mode (against local servers), CPU, no hub token.

    Test modules that need another kind of home define their own `home` fixture, which takes precedence."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOKAL_HOME", str(home))
    monkeypatch.setenv("LOKAL_OFFLINE", "0")
    monkeypatch.setenv("LOKAL_DEVICE", "cpu")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LOKAL_HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
