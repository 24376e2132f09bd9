"""A request without max_tokens stops at DEFAULT_MAX_TOKENS (or the end of the context, if sooner), on every
local engine: they all budget through engines/base.token_budget."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines import base
from lokal.engines.base import DEFAULT_MAX_TOKENS, GenerationRequest, token_budget
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine
from lokal.errors import ContextLengthExceeded


def test_budget_without_max_tokens_is_the_default_or_the_room_left() -> None:
    assert DEFAULT_MAX_TOKENS == 4096
    assert token_budget(8192, 100, None) == 4096
    assert token_budget(2048, 100, None) == 1948  # less room than the default: up to the end
    assert token_budget(8192, 100, 6000) == 6000  # an explicit value wins over the default
    with pytest.raises(ContextLengthExceeded):
        token_budget(2048, 2048, None)


@pytest.mark.parametrize("engine_cls", [LlamaCppEngine, BatchedLlamaCppEngine])
def test_engines_stop_at_the_default(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch,
                                     engine_cls: type[LlamaCppEngine]) -> None:
    monkeypatch.setattr(base, "DEFAULT_MAX_TOKENS", 9)  # the tiny model's context (2048) is below the real one
    engine = engine_cls() if engine_cls is LlamaCppEngine else BatchedLlamaCppEngine(parallel=2)
    variant = Variant(id="m:1", path=str(tiny_gguf))
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, tiny_gguf)
    try:
        req = GenerationRequest(prompt="Once upon a time", ignore_eos=True)  # no max_tokens
        last = list(engine.generate(req, threading.Event()))[-1]
        assert last.finish_reason == "length"
        assert last.usage is not None and last.usage.completion_tokens == 9
    finally:
        engine.unload()
