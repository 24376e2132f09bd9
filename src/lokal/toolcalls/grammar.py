"""GBNF grammars for tool_choice: the family's own call markup with arguments matching each tool's schema.

The grammar writes exactly what the model would write for a call in its own format, so the same parser reads
forced calls and free ones. Each tool's argument rules come from llama.cpp's schema converter, renamed with a
per-tool prefix so two tools' rules never clash. Closing markers that engines treat as end of generation
(harmony's <|call|>) are left out of the grammar: the model's end-of-generation token ends the call there.

For "auto" the grammar is lazy: free text until a trigger (the family's call opener) appears, then the grammar
applies from the trigger on, which is why every grammar's root begins with its triggers' text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lokal.errors import InvalidRequest
from lokal.toolcalls.families import FAMILIES, iter_functions
from lokal.toolcalls.gbnf import compile_error, format_rules, literal, prefixed
from lokal.toolcalls.schema import schema_rules

# Per family: (text before the name, between name and arguments, after the arguments, separator of parallel
# calls, text around the whole list of calls, lazy triggers).
Shape = tuple[str, str, str, str, tuple[str, str], tuple[str, ...]]
SHAPES: dict[str, Shape] = {
    "hermes": ('<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>", "\n", ("", ""), ("<tool_call>",)),
    "llama3": ('{"name": "', '", "parameters": ', "}", "; ", ("", ""), ("<|python_tag|>", '{"name"')),
    "mistral": ('{"name": "', '", "arguments": ', "}", ", ", ("[TOOL_CALLS][", "]"), ("[TOOL_CALLS]",)),
    "phi4": ('{"name": "', '", "arguments": ', "}", ", ", ("<|tool_call|>[", "]<|/tool_call|>"), ("<|tool_call|>",)),
    "harmony": (
        "<|channel|>commentary to=functions.",
        " <|constrain|>json<|message|>",
        "",
        "",
        ("", ""),
        ("<|channel|>commentary to=functions.",),
    ),
}


def _chosen(tools: Sequence[Mapping[str, Any]], tool_choice: str | Mapping[str, Any]) -> tuple[str, str | None]:
    """("none" | "auto" | "required" | "named", the named function)."""
    if isinstance(tool_choice, str):
        if tool_choice in ("none", "auto", "required"):
            return tool_choice, None
        raise InvalidRequest(
            f"tool_choice {tool_choice!r} is not one of 'none', 'auto', 'required' or a named function",
            param="tool_choice",
        )
    fn = tool_choice.get("function") if isinstance(tool_choice, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be a string or {"type": "function", "function": {"name": ...}}', param="tool_choice"
        )
    known = [f.get("name") for f in iter_functions(tools)]
    if name not in known:
        raise InvalidRequest(
            f"tool_choice names the function {name!r}, which is not among the tools ({', '.join(map(str, known))})",
            param="tool_choice",
        )
    return "named", name


def tool_constraint(
    family: str,
    tools: Sequence[Mapping[str, Any]],
    tool_choice: str | Mapping[str, Any],
    *,
    parallel: bool = True,
) -> tuple[str | None, tuple[str, ...]]:
    """(GBNF grammar, lazy triggers) for a tool_choice: "none" -> (None, ()); "auto" -> (grammar for the family's
    call syntax with arguments matching each tool's JSON schema, triggers = the family's call-start markers) so
    text is free until the model starts a call; "required" -> (grammar forcing >=1 call, ()); a named function
    {"type":"function","function":{"name":N}} -> (grammar forcing a call of N, ()). The grammar produces the
    family's own markup so the same parser reads forced and free calls. Raises lokal.errors.InvalidRequest for a
    name not among the tools or a schema feature it cannot express."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tool-call family {family!r}; known: {', '.join(FAMILIES)}")
    mode, named = _chosen(tools, tool_choice)
    if mode == "none":
        return None, ()
    functions = list(iter_functions(tools))
    if not functions:
        raise InvalidRequest(f"tool_choice {tool_choice!r} needs at least one tool", param="tool_choice")
    before, middle, after, sep, (open_, close), triggers = SHAPES[family]
    rules: dict[str, str] = {}
    calls = []
    for i, fn in enumerate(functions):
        if named is not None and fn.get("name") != named:
            continue
        prefix = f"t{i}-"
        args = schema_rules(
            fn.get("parameters") or {"type": "object", "properties": {}},
            param="tools",
            strict=bool(fn.get("strict")),
            what=f"the parameters of tool {fn.get('name')!r}",
        )
        rules.update(prefixed(args, prefix))
        rules[f"{prefix}call"] = f"{literal(before + str(fn['name']) + middle)} {prefix}root" + (
            f" {literal(after)}" if after else ""
        )
        calls.append(f"{prefix}call")
    rules["call"] = " | ".join(calls)
    # Harmony ends each call with <|call|>, which ends the generation: one call per answer.
    many = parallel and family != "harmony"
    body = f"call ({literal(sep)} call)*" if many else "call"
    root = " ".join(x for x in (literal(open_) if open_ else "", body, literal(close) if close else "") if x)
    if family == "llama3" and mode == "auto":
        root = f'("<|python_tag|>")? {root}'  # the lazy grammar starts at whichever trigger fired
    grammar = format_rules({"root": root, **rules})
    error = compile_error(grammar)
    if error:  # lokal built it: a bug, but a request-sized one; say which tools were involved
        raise InvalidRequest(f"tools {json.dumps([f.get('name') for f in functions])}: {error}", param="tools")
    return grammar, (triggers if mode == "auto" else ())
