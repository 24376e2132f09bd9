"""GBNF text helpers: literals, renaming a converter's rules, and asking llama.cpp's own parser."""

from __future__ import annotations

import re
from collections.abc import Mapping

# A GBNF rule body is literals, character classes, rule names and operators; only names get renamed.
_BODY_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[A-Za-z0-9_-]+|.', re.S)


def literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + out.replace("\t", "\\t") + '"'


def parse_rules(grammar: str) -> dict[str, str]:
    """{name: body} of a grammar written one rule per line (as llama.cpp's schema converter writes it)."""
    rules: dict[str, str] = {}
    for line in grammar.splitlines():
        if "::=" in line:
            name, body = line.split("::=", 1)
            rules[name.strip()] = body.strip()
    return rules


def prefixed(rules: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The same rules with every name (definitions and references) prefixed, so grammars can be merged."""

    def rename(body: str) -> str:
        return "".join(prefix + t if t in rules else t for t in _BODY_TOKEN.findall(body))

    return {prefix + name: rename(body) for name, body in rules.items()}


def format_rules(rules: Mapping[str, str]) -> str:
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items())


def compile_error(grammar: str) -> str | None:
    """None if llama.cpp's grammar parser accepts `grammar` (root rule "root"), else a short reason.

    The parser needs no model, so a grammar lokal built is checked before any engine sees it. Without
    llama-cpp-python there is nothing to check with (and no engine that could use a grammar)."""
    try:
        import llama_cpp
    except ImportError:
        return None
    sampler = llama_cpp.llama_sampler_init_grammar(None, grammar.encode("utf-8"), b"root")
    if not sampler:
        return "llama.cpp's grammar parser rejected the grammar built from it"
    llama_cpp.llama_sampler_free(sampler)
    return None
