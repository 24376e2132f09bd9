"""Small builders shared by the bench tests."""

from __future__ import annotations

from typing import Any

from lokal.bench.config import BenchConfig, LoadPattern, ModelEntry
from lokal.bench.prompts import Prompt
from tests.support.scripted import ScriptedServer


def prompts(n: int) -> list[Prompt]:
    """n prompts with known token counts: prompt i has i+3 words, and the scripted server counts words."""
    return [Prompt(f"p{i}", ({"role": "user", "content": " ".join(["word"] * (i + 3))},)) for i in range(n)]


def config(srv: ScriptedServer, *models: str, **kw: Any) -> BenchConfig:
    kw.setdefault("prompts", prompts(4))
    kw.setdefault("rounds", 1)
    kw.setdefault("warmup_rounds", 0)
    kw.setdefault("pattern", LoadPattern())
    return BenchConfig(models=[ModelEntry(name=m) for m in models], endpoint=srv.base_url, **kw)
