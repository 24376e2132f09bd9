"""tool_choice grammars: they compile, and the tiny model constrained by them writes calls that the family's
parser reads and whose arguments validate against the tool's schema."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from lokal.errors import InvalidRequest
from lokal.toolcalls import FAMILIES, parse_tool_calls, tool_constraint
from tests.toolcalls.conftest import ADD, WEATHER, generate, grammar_compiles

TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
CHOICES: list[Any] = ["auto", "required", {"type": "function", "function": {"name": "add"}}]


def check_calls(family: str, text: str, finish: str, *, only: str | None = None) -> int:
    content, calls = parse_tool_calls(family, text, TOOLS)
    assert content == "", text
    assert calls, text
    complete = calls[:-1] if finish == "length" else calls  # a call cut by max_tokens is not checked
    for call in complete:
        assert only is None or call.name == only
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    return len(calls)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("choice", CHOICES, ids=["auto", "required", "named"])
def test_grammars_compile(tiny_llm: Any, family: str, choice: Any) -> None:
    for parallel in (True, False):
        grammar, triggers = tool_constraint(family, TOOLS, choice, parallel=parallel)
        assert grammar is not None and grammar_compiles(tiny_llm, grammar)
        assert bool(triggers) == (choice == "auto")


@pytest.mark.parametrize("family", FAMILIES)
def test_forced_calls_parse_and_validate(tiny_llm: Any, family: str) -> None:
    for seed in range(3):
        grammar, _ = tool_constraint(family, TOOLS, "required", parallel=False)
        assert grammar is not None
        text, finish = generate(tiny_llm, grammar, seed=seed)
        assert finish == "stop", text  # the grammar ran to its end and the model could only stop
        assert check_calls(family, text, finish) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_named_function_is_the_one_called(tiny_llm: Any, family: str) -> None:
    for name in ("get_weather", "add"):
        grammar, _ = tool_constraint(family, TOOLS, {"type": "function", "function": {"name": name}}, parallel=False)
        assert grammar is not None
        text, finish = generate(tiny_llm, grammar, seed=7)
        check_calls(family, text, finish, only=name)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "harmony"])
def test_parallel_calls_parse(tiny_llm: Any, family: str) -> None:
    grammar, _ = tool_constraint(family, TOOLS, "required", parallel=True)
    assert grammar is not None
    counts = []
    for seed in range(4):
        text, finish = generate(tiny_llm, grammar, seed=seed, max_tokens=300)
        counts.append(check_calls(family, text, finish))
    assert max(counts) >= 1


def test_lazy_grammar_engages_at_the_trigger(tiny_llm: Any) -> None:
    """What the engine does for tool_choice "auto": free text, then the grammar from the trigger on. The free
    part is accepted as if sampled, so the trigger fires at a known place."""
    import llama_cpp
    from llama_cpp._internals import LlamaSampler
    from llama_cpp.llama_grammar import LlamaGrammar

    grammar, triggers = tool_constraint("hermes", TOOLS, "auto", parallel=False)
    assert grammar is not None and triggers == ("<tool_call>",)
    patterns = [r"[\s\S]*?(" + "|".join(re.escape(t) for t in triggers) + r")[\s\S]*"]
    llm = tiny_llm
    sampler = LlamaSampler()
    sampler.add_grammar_lazy_patterns(llm._model, LlamaGrammar.from_string(grammar), patterns, [])
    sampler.add_top_k(40)
    sampler.add_dist(11)
    llm.reset()
    llm.eval(llm.tokenize(b"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_bos=True, special=True))
    free = "I will check. <tool_call>"
    for tok in llm.tokenize(free.encode(), add_bos=False, special=False):
        sampler.accept(tok)
        llm.eval([tok])
    out = []
    for _ in range(200):
        tok = sampler.sample(llm._ctx, -1)
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(tok)
        llm.eval([tok])
    text = free + llm.detokenize(out).decode()
    content, calls = parse_tool_calls("hermes", text, TOOLS)
    assert content == "I will check."
    assert len(calls) == 1
    jsonschema.validate(json.loads(calls[0].arguments), SCHEMAS[calls[0].name])


def test_none_needs_no_grammar() -> None:
    assert tool_constraint("hermes", TOOLS, "none") == (None, ())


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"type": "function", "function": {"name": "nope"}}, "'nope', which is not among the tools"),
        ("sometimes", "not one of 'none', 'auto', 'required'"),
        ({"type": "function"}, "tool_choice must be a string or"),
    ],
)
def test_bad_tool_choice(choice: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)) as err:
        tool_constraint("hermes", TOOLS, choice)
    assert err.value.param == "tool_choice"


def test_strict_tool_with_unenforceable_schema_is_refused() -> None:
    tool: dict[str, Any] = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}}}  # fmt: skip
    with pytest.raises(InvalidRequest, match=r"tool 'f'.*'minimum' at /properties/n") as err:
        tool_constraint("hermes", [tool], "required")
    assert err.value.param == "tools"
    lenient = {"type": "function", "function": {**tool["function"], "strict": False}}
    grammar, _ = tool_constraint("hermes", [lenient], "required")  # non-strict: the range is left to the model
    assert grammar is not None


def test_structural_schema_features_are_refused_even_when_not_strict() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {"required": ["x"]}}}}
    with pytest.raises(InvalidRequest, match="'not' at /"):
        tool_constraint("phi4", [tool], "auto")


def test_rules_of_two_tools_do_not_clash() -> None:
    a = {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {
        "x": {"type": "string"}}, "required": ["x"]}}}  # fmt: skip
    b = {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {
        "x": {"type": "integer"}}, "required": ["x"]}}}  # fmt: skip
    grammar, _ = tool_constraint("hermes", [a, b], "required")
    assert grammar is not None
    assert re.search(r"^t0-x-kv ::= .*t0-string", grammar, re.M)
    assert re.search(r"^t1-x-kv ::= .*t1-integer", grammar, re.M)
