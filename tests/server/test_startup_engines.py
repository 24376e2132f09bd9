"""`lokal serve` checks, before anything listens, that a model asked for by name can run on the engines this
install has; the implicit default falls back to the synthetic demo instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lokal.catalog.download import Progress
from lokal.catalog.spec import Variant
from lokal.config import get_settings
from lokal.errors import EngineUnavailable
from lokal.runtime import engines
from lokal.server import startup
from lokal.server.startup import check_requested, prepare_default


@pytest.fixture
def no_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    real = engines.module_present
    monkeypatch.setattr(engines, "module_present", lambda m: m != "llama_cpp" and real(m))


def test_a_gguf_only_model_asked_for_names_the_install_command(lokal_home: Path, no_llama_cpp: None) -> None:
    settings = get_settings()
    with pytest.raises(EngineUnavailable) as err:
        check_requested(settings, "mistral-7b", pull=True)  # refused before any download starts
    assert engines.install_hint("llamacpp") in err.value.message
    assert not settings.models_dir.exists() or not any(settings.models_dir.rglob("*.gguf*"))


def test_a_base_install_offline_serves_the_demo(lokal_home: Path, no_llama_cpp: None) -> None:
    prepared = prepare_default(get_settings(), None, pull=False)
    assert (prepared.alias, prepared.how) == ("lokal-demo-synthetic", "demo")
    assert "downloads are off" in prepared.reason and prepared.wanted == "qwen2.5-0.5b"


def test_a_missing_default_downloads_inside_the_callers_hook(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heard: list[tuple[Any, Any]] = []

    def fake_download(variant: Variant, settings: Any, *, progress: Progress | None, **kw: Any) -> None:
        assert progress is not None
        progress(1, 2)

    @contextmanager
    def downloading(alias: str, variant: Variant) -> Iterator[Progress]:
        heard.append((alias, variant.id))
        yield lambda done, total: heard.append((done, total))

    monkeypatch.setattr(startup, "download", fake_download)
    prepared = prepare_default(get_settings(), None, pull=True, downloading=downloading)
    assert (prepared.alias, prepared.how) == ("qwen2.5-0.5b", "downloaded")
    assert heard == [(prepared.alias, prepared.variant_id), (1, 2)]
