"""Tool calls out of a whole answer: the streaming parser fed everything at once, so both read alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lokal.engines.base import ToolCall
from lokal.toolcalls.stream import ToolCallStream


def parse_tool_calls(
    family: str, text: str, tools: Sequence[Mapping[str, Any]], *, parallel: bool = True
) -> tuple[str, list[ToolCall]]:
    """Whole answer -> (content without call markup, calls)."""
    stream = ToolCallStream(family, tools, parallel=parallel)
    items = [*stream.feed(text), *stream.close()]
    return "".join(i for i in items if isinstance(i, str)), stream.calls
