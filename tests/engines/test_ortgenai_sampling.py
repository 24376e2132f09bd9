"""The sampling fields of GenerationRequest on the onnx engine (ONNX Runtime GenAI), on a tiny random-weight
model built offline: search options where GenAI has them, the step's logits where it does not, grammars
through its guidance, and a 400 naming the field and the model for what it cannot do."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lokal.catalog.spec import ModelSpec
from lokal.engines.base import ChatMessage, GenerationEvent, GenerationRequest
from lokal.engines.ortgenai import OrtGenAIEngine
from lokal.errors import InvalidRequest
from tests.engines.onnx_model import onnx_entry

USER = (ChatMessage("user", "Hello there"),)
YES_NO = 'root ::= "yes" | "no"'


@pytest.fixture(scope="module")
def engine(tiny_onnx: Path) -> Iterator[OrtGenAIEngine]:
    spec = ModelSpec.model_validate(onnx_entry("tiny-onnx", tiny_onnx))
    e = OrtGenAIEngine()
    e.load(spec, spec.variants[0], tiny_onnx)
    yield e
    e.unload()


def _events(engine: OrtGenAIEngine, req: GenerationRequest) -> list[GenerationEvent]:
    return list(engine.generate(req, threading.Event()))


def _text(engine: OrtGenAIEngine, req: GenerationRequest) -> tuple[str, str | None]:
    events = _events(engine, req)
    return "".join(e.text for e in events), events[-1].finish_reason


def _greedy(max_tokens: int = 16, **kw: object) -> GenerationRequest:
    return GenerationRequest(messages=USER, max_tokens=max_tokens, temperature=0, **kw)  # type: ignore[arg-type]


def _id(engine: OrtGenAIEngine, piece: str) -> int:
    ids = [int(t) for t in engine._tokenizer.encode(piece)]
    assert len(ids) == 1, ids
    return ids[0]


def test_bias_makes_and_bans_tokens(engine: OrtGenAIEngine) -> None:
    assert _text(engine, _greedy(logit_bias={_id(engine, "q"): 100.0})) == ("q" * 16, "length")
    plain = _events(engine, _greedy(logprobs=0))
    first = plain[0].logprobs[0].token
    banned = _events(engine, _greedy(logit_bias={_id(engine, first): -100.0}, logprobs=0))
    assert first not in [lp.token for e in banned for lp in e.logprobs]


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty", "repeat_penalty"])
def test_penalties_change_the_greedy_answer(engine: OrtGenAIEngine, field: str) -> None:
    plain, _ = _text(engine, _greedy(24))
    change: dict[str, Any] = {field: 1.5 if field == "repeat_penalty" else 2.0}
    assert _text(engine, replace(_greedy(24), **change))[0] != plain


def test_top_k_1_and_min_p_1_are_greedy(engine: OrtGenAIEngine) -> None:
    greedy, _ = _text(engine, _greedy())
    sampled = GenerationRequest(messages=USER, max_tokens=16, temperature=1.0, seed=3)
    assert _text(engine, sampled)[0] != greedy
    assert _text(engine, replace(sampled, top_k=1))[0] == greedy
    assert _text(engine, replace(sampled, min_p=1.0))[0] == greedy


def test_logprobs_one_per_token_from_the_models_logits(engine: OrtGenAIEngine) -> None:
    events = _events(engine, _greedy(10, logprobs=4))
    entries = [lp for e in events for lp in e.logprobs]
    usage = events[-1].usage
    assert usage is not None and len(entries) == usage.completion_tokens == 10
    for e in entries:
        assert e.logprob <= 0 and len(e.top) == 4
        assert [t.logprob for t in e.top] == sorted((t.logprob for t in e.top), reverse=True)
        assert (e.top[0].token, e.top[0].logprob) == (e.token, e.logprob)
    assert "".join(e.token for e in entries) == "".join(e.text for e in events)
    # Asking for logprobs reads the logits; it does not change what is drawn.
    sampled = GenerationRequest(messages=USER, max_tokens=12, temperature=1.0, seed=8)
    assert _text(engine, replace(sampled, logprobs=2)) == _text(engine, sampled)


def test_a_gbnf_grammar_constrains_through_guidance(engine: OrtGenAIEngine) -> None:
    for seed in range(3):
        req = GenerationRequest(messages=USER, max_tokens=10, temperature=1.0, seed=seed, grammar=YES_NO)
        assert _text(engine, req) in (("yes", "stop"), ("no", "stop"))
    # min_p cuts before guidance masks: what it cuts stays allowable, so the grammar always has a token left.
    strict = GenerationRequest(messages=USER, max_tokens=10, temperature=1.0, seed=1, min_p=1.0, grammar=YES_NO)
    assert _text(engine, strict) in (("yes", "stop"), ("no", "stop"))
    # The grammar wins over JSON mode and over a bias that would make every token "q".
    assert _text(engine, _greedy(grammar=YES_NO, json_mode=True, logit_bias={_id(engine, "q"): 100.0}))[0] in (
        "yes",
        "no",
    )


def test_a_json_schema_grammar_gives_json_that_validates(engine: OrtGenAIEngine) -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "tag": {"type": "string", "maxLength": 4}},
        "required": ["n", "tag"],
        "additionalProperties": False,
    }
    grammar = json_schema_to_gbnf(json.dumps(schema))
    for seed in range(3):
        text, finish = _text(
            engine, GenerationRequest(messages=USER, max_tokens=60, temperature=1.0, seed=seed, grammar=grammar)
        )
        assert finish == "stop", text
        value = json.loads(text)
        assert set(value) == {"n", "tag"} and isinstance(value["n"], int) and len(value["tag"]) <= 4


@pytest.mark.parametrize("bad", ["root ::= undefined-rule", 'root ::= "open', "x ::= [a-z]", "root ::= <[12]>"])
def test_invalid_or_untranslatable_grammar_is_a_400(engine: OrtGenAIEngine, bad: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _events(engine, _greedy(grammar=bad))
    assert err.value.param == "grammar"


def test_what_genai_cannot_do_is_a_400_naming_field_and_model(engine: OrtGenAIEngine) -> None:
    # A lazy grammar (tool_choice "auto") is not one guidance can start mid-answer: the answer is free text, the
    # same as with no grammar, and the tool-call parser reads it.
    lazy = _events(engine, _greedy(4, grammar='root ::= "<call>" "x"', grammar_triggers=["<call>"]))
    free = _events(engine, _greedy(4))
    assert "".join(e.text for e in lazy) == "".join(e.text for e in free)
    with pytest.raises(InvalidRequest, match=r"tiny-onnx") as bias:
        _events(engine, _greedy(logit_bias={10**6: 1.0}))
    assert bias.value.param == "logit_bias"
    events = _events(engine, _greedy(4))  # and the engine serves on
    assert events[-1].finish_reason == "length" and events[-1].usage is not None
    assert events[-1].usage.completion_tokens == 4
