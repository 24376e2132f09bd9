"""Which tool-call format a model writes, and the catalog saying so truthfully."""

from __future__ import annotations

import re

import pytest

from lokal.catalog.catalog import builtin_specs
from lokal.gguf.synthetic import CHATML_TEMPLATE
from lokal.toolcalls import FAMILIES, family_for, new_call_id
from lokal.toolcalls.templates import TEMPLATES


@pytest.mark.parametrize(
    ("name", "family"),
    [("chatml", "hermes"), ("llama3", "llama3"), ("mistral", "mistral"), ("phi4", "phi4"), ("harmony", "harmony"),
     ("phi3", None), ("gemma", None), ("deepseek-coder", None), (None, None), ("Llama-3", "llama3")],
)  # fmt: skip
def test_family_from_catalog_name(name: str | None, family: str | None) -> None:
    assert family_for(name) == family


@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("... '<tool_call>\\n' ...", "hermes"),
        ("... '<|tool_call|>' ... '<|tool|>' ...", "phi4"),
        ("{{ '<|start|>assistant<|channel|>' }} ... '<|call|>'", "harmony"),
        ("'[TOOL_CALLS]' ...", "mistral"),
        ("'<|python_tag|>' ...", "llama3"),
        ("<|start_header_id|> ... {% if tools %}", "llama3"),
    ],
)
def test_template_markers_win_over_the_catalog_name(source: str, family: str) -> None:
    assert family_for("chatml", source) == family
    assert family_for(None, source) == family


def test_plain_template_leaves_it_to_the_catalog() -> None:
    assert family_for("chatml", CHATML_TEMPLATE) == "hermes"
    assert family_for(None, CHATML_TEMPLATE) is None
    assert family_for("gemma", "<start_of_turn>") is None


def test_lokals_own_templates_name_their_family() -> None:
    for fmt, source in TEMPLATES.items():
        assert family_for(None, source) == family_for(fmt), fmt


def test_catalog_supports_tools_is_true_exactly_for_formats_with_a_parser() -> None:
    chat = [s for s in builtin_specs() if s.task == "chat-completion"]
    assert len(chat) >= 8
    for spec in chat:
        assert spec.supports_tools == (family_for(spec.chat_template) in FAMILIES), spec.alias


def test_call_ids_look_like_openais() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
