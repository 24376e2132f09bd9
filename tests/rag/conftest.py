"""RAG fixtures: the shared embedder, a fresh corpus, a collection ingested once, a fake endpoint."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rag.helpers import INGEST_MAX_CHARS, FakeOpenAI, Ingested, fake_openai_app, write_corpus
from tests.support.server import run_app

# Chainlit writes .chainlit/ and .files/ into its app root when imported: never into the repository, and not
# left behind in /tmp after the run either.
if "CHAINLIT_APP_ROOT" not in os.environ:
    os.environ["CHAINLIT_APP_ROOT"] = _chainlit_root = tempfile.mkdtemp(prefix="lokal-chainlit-")
    atexit.register(shutil.rmtree, _chainlit_root, True)


@pytest.fixture(scope="session")
def embedder() -> Any:
    from lokal.embeddings.torch_st import get_embedder

    return get_embedder()  # the process-wide instance: loaded once for every RAG test


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "docs")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture(scope="session")
def ingested(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Ingested:
    """One collection built once (small chunks: about one paragraph each); read-only tests share it."""
    from lokal.rag.index import Index
    from lokal.rag.ingest import ingest

    root = tmp_path_factory.mktemp("ingested")
    docs = write_corpus(root / "docs")
    home = root / "home"
    with Index.open("docs", home, create=True) as index:
        ingest(index, [docs], embedder=embedder, max_chars=INGEST_MAX_CHARS, overlap_chars=60)
    return Ingested(home, docs, "docs")


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    state = FakeOpenAI()
    with run_app(fake_openai_app(state)) as url:
        state.base_url = f"{url}/v1"
        yield state
