"""Tool calling: how each model family writes a function call, reading calls out of its output, and grammars.

Local engines produce text; serving reads tool calls out of it here, per template family, in whole answers
and incrementally while streaming (so no raw call markup reaches `delta.content`). Forced calls and
structured outputs constrain decoding with GBNF grammars built from JSON schemas.
"""

from lokal.toolcalls.families import FAMILIES, family_for, new_call_id
from lokal.toolcalls.grammar import tool_constraint
from lokal.toolcalls.parse import parse_tool_calls
from lokal.toolcalls.schema import json_schema_grammar
from lokal.toolcalls.stream import ToolCallStream
from lokal.toolcalls.validate import check_tools

__all__ = [
    "FAMILIES",
    "ToolCallStream",
    "check_tools",
    "family_for",
    "json_schema_grammar",
    "new_call_id",
    "parse_tool_calls",
    "tool_constraint",
]
