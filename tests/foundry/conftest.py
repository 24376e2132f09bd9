"""A LOKAL_HOME whose catalog looks like Foundry Local's, a real file server to download from, and a `foundry`
executable on PATH (the SDK shells out to it), as Foundry Local users would have them."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lokal.config import Settings, get_settings
from lokal.foundry import service
from tests.catalog.fileserver import FileServer
from tests.support.models import tiny_entry, write_catalog
from tests.support.server import free_port

BLOB_BYTES = 3 * (1 << 20)  # several downloader chunks, so progress has steps between 0 and 100 %

TINY_ID = "tiny-cpu:1"
DL_CPU_ID = "tiny-dl-generic-cpu:1"
DL_GPU_ID = "tiny-dl-generic-gpu:2"
BLOB_ID = "blob-generic-cpu:1"
BAD_SHA_ID = "bad-sha-generic-cpu:1"
GONE_ID = "gone-generic-cpu:1"


@dataclass(frozen=True)
class Files:
    url: str
    tiny_sha256: str
    blob_sha256: str


@pytest.fixture(scope="session")
def files(tiny_gguf: Path) -> Iterator[Files]:
    """A real HTTP server on 127.0.0.1 holding the tiny GGUF and a 3 MiB blob that arrives in steps."""
    tiny = tiny_gguf.read_bytes()
    blob = random.Random(7).randbytes(BLOB_BYTES)
    with FileServer() as server:
        server.add("/models/tiny.gguf", tiny)
        server.add("/models/blob.gguf", blob, delay=0.01)
        yield Files(server.url, hashlib.sha256(tiny).hexdigest(), hashlib.sha256(blob).hexdigest())


def foundry_entries(tiny_gguf: Path, files: Files) -> list[dict[str, Any]]:
    """A cached model, a downloadable one with GPU and CPU variants, and three that exercise download outcomes."""

    def url_entry(alias: str, variants: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"alias": alias, "publisher": "lokal-tests", "license": "mit", "context_length": 2048,
                "synthetic": True, "variants": variants, **extra}  # fmt: skip

    tiny_size = tiny_gguf.stat().st_size
    dl = {"url": f"{files.url}/models/tiny.gguf", "sha256": files.tiny_sha256, "size_bytes": tiny_size,
          "size_exact": True}  # fmt: skip
    blob = {"url": f"{files.url}/models/blob.gguf", "size_bytes": BLOB_BYTES, "size_exact": True}
    return [
        tiny_entry("tiny", tiny_gguf, ["general"], chat_template="chatml", supports_tools=True),
        # The GPU variant comes first in the file: on a CPU-only machine the CPU one must still be preferred.
        url_entry(
            "tiny-dl",
            [{"id": DL_GPU_ID, "device": "cuda", **dl}, {"id": DL_CPU_ID, "device": "cpu", **dl}],
            chat_template="phi3",
            max_output_tokens=256,
        ),
        url_entry("blob", [{"id": BLOB_ID, "sha256": files.blob_sha256, **blob}]),
        url_entry("bad-sha", [{"id": BAD_SHA_ID, "sha256": "0" * 64, **blob}]),
        url_entry("gone", [{"id": GONE_ID, "url": f"{files.url}/models/missing.gguf"}]),
    ]


@pytest.fixture(scope="session")
def foundry_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `foundry`: the installed console script when there is one, else a shim."""
    folder = tmp_path_factory.mktemp("foundry-bin")
    installed = Path(sys.executable).parent / "foundry"
    target = folder / "foundry"
    if installed.is_file():
        target.symlink_to(installed)
    else:
        target.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lokal.foundry.cli "$@"\n')
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


@dataclass(frozen=True)
class FoundryHome:
    home: Path
    port: int
    files: Files

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home, port=self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def foundry_home(root: Path, tiny_gguf: Path, files: Files, foundry_bin: Path) -> Iterator[FoundryHome]:
    """Point LOKAL_HOME/LOKAL_PORT (and PATH, for the SDK) at a fresh home; stop its service afterwards."""
    home = root / "home"
    write_catalog(home, foundry_entries(tiny_gguf, files))
    env = FoundryHome(home, free_port(), files)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOKAL_HOME", str(home))
        mp.setenv("LOKAL_PORT", str(env.port))
        mp.setenv("LOKAL_OFFLINE", "0")  # downloads go to the local file server only
        mp.setenv("LOKAL_DEVICE", "cpu")
        mp.setenv("PATH", f"{foundry_bin}{os.pathsep}{os.environ.get('PATH', '')}")
        for var in ("LOKAL_API_KEY", "OPENAI_API_KEY", "LOKAL_HOST", "LOKAL_DEFAULT_MODEL"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        try:
            yield env
        finally:
            try:
                service.stop(env.settings)
            finally:
                get_settings.cache_clear()
