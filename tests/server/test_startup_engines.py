"""`lokal serve` checks, before anything listens, that a model asked for by name can run on the engines this
install has; the implicit default falls back to the synthetic demo instead."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from lokal.config import get_settings
from lokal.errors import EngineUnavailable
from lokal.runtime import engines
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
    settings = get_settings()
    out = io.StringIO()
    alias = prepare_default(settings, None, pull=False, console=Console(file=out, width=200))
    assert alias == "lokal-demo-synthetic"
    assert "SYNTHETIC" in out.getvalue()
