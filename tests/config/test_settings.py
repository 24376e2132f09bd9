"""Every knob is a Settings field, read from its LOKAL_* variable and listed in the README's settings table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lokal.config import Settings, env_value

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_lists_every_field() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`LOKAL_([A-Z_]+)`", section))
    assert {name.upper() for name in Settings.model_fields} <= listed


def test_engine_and_router_knobs_read_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.max_context, defaults.prefill_seconds, defaults.prefill_chunk) == (8192, 0.25, 64)
    assert (defaults.min_shared_prefix, defaults.router_encoder, defaults.router_warm) == (32, "onnx", False)
    for name, value in {
        "MAX_CONTEXT": "1024",
        "PREFILL_SECONDS": "0.5",
        "PREFILL_CHUNK": "16",
        "MIN_SHARED_PREFIX": "8",
        "ROUTER_ENCODER": "torch",
        "ROUTER_WARM": "1",
    }.items():
        monkeypatch.setenv(f"LOKAL_{name}", value)
    s = Settings()
    assert (s.max_context, s.prefill_seconds, s.prefill_chunk, s.min_shared_prefix) == (1024, 0.5, 16, 8)
    assert (s.router_encoder, s.router_warm) == ("torch", True)


def test_env_value_reads_a_named_variable_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOKAL_TEST_KEY", raising=False)
    assert env_value("LOKAL_TEST_KEY") is None and env_value("LOKAL_TEST_KEY", "d") == "d"
    monkeypatch.setenv("LOKAL_TEST_KEY", "k")
    assert env_value("LOKAL_TEST_KEY") == "k"
