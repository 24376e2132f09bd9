"""Tool calling: how each model family writes a function call, reading calls out of its output, and grammars.

Local engines produce text; serving reads tool calls out of it here, per template family, in whole answers
and incrementally while streaming (so no raw call markup reaches `delta.content`). Forced calls and
structured outputs constrain decoding with GBNF grammars built from JSON schemas.
"""
