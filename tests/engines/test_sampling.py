"""Every sampling field of GenerationRequest on the real llama.cpp engines (single-stream and batched, tiny GGUF):
penalties, logit bias, top-k/min-p, grammars (eager and lazy), and that both engines mean the same thing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import ChatMessage, GenerationEvent, GenerationRequest
from lokal.engines.llama_sampling import LazyGrammar
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine
from lokal.errors import InvalidRequest

CHAT = (ChatMessage("user", "hello"),)
YES_NO = 'root ::= "yes" | "no"'


def _load(engine: LlamaCppEngine, path: Path) -> LlamaCppEngine:
    variant = Variant(id="m:1", path=str(path))
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, path)
    return engine


@pytest.fixture(scope="module")
def engines(tiny_gguf: Path) -> Iterator[dict[str, LlamaCppEngine]]:
    loaded = {
        "single": _load(LlamaCppEngine(), tiny_gguf),
        "batched": _load(BatchedLlamaCppEngine(parallel=2), tiny_gguf),
    }
    assert isinstance(loaded["batched"], BatchedLlamaCppEngine) and loaded["batched"].batched
    yield loaded
    for e in loaded.values():
        e.unload()


@pytest.fixture(params=["single", "batched"])
def engine(request: pytest.FixtureRequest, engines: dict[str, LlamaCppEngine]) -> LlamaCppEngine:
    return engines[request.param]


def _events(engine: LlamaCppEngine, req: GenerationRequest) -> list[GenerationEvent]:
    return list(engine.generate(req, threading.Event()))


def _text(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[str, str | None]:
    events = _events(engine, req)
    return "".join(e.text for e in events), events[-1].finish_reason


def _greedy(max_tokens: int = 24, **kw: object) -> GenerationRequest:
    return GenerationRequest(messages=CHAT, max_tokens=max_tokens, temperature=0, **kw)  # type: ignore[arg-type]


def _token_ids(engine: LlamaCppEngine, piece: str) -> list[int]:
    """The ids that decode to `piece` on their own: a word piece and, for one character, its byte token."""
    model = engine._model
    ids = [i for i in range(model.n_vocab()) if model.detokenize([i]) == piece.encode()]
    assert ids, piece
    return ids


def _token_id(engine: LlamaCppEngine, piece: str) -> int:
    return _token_ids(engine, piece)[-1]  # the word piece: the tiny vocabulary lists them after the bytes


# -- penalties, bias, truncation ---------------------------------------------------------------------------
@pytest.mark.parametrize("penalty", [{"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"repeat_penalty": 1.5}])
def test_penalties_change_a_greedy_answer_that_repeats_itself(engine: LlamaCppEngine, penalty: dict[str, Any]) -> None:
    events = _events(engine, _greedy(logprobs=0))
    tokens = [lp.token for e in events for lp in e.logprobs]
    assert len(set(tokens)) < len(tokens)  # unpenalised, greedy decoding repeats tokens
    penalised, _ = _text(engine, replace(_greedy(), **penalty))
    assert penalised != "".join(e.text for e in events)


def test_a_huge_bias_makes_every_token_that_one(engine: LlamaCppEngine) -> None:
    q = _token_id(engine, "q")
    text, finish = _text(engine, _greedy(10, logit_bias={q: 100.0}))
    assert (text, finish) == ("q" * 10, "length")


def test_a_bias_of_minus_100_bans_the_token(engine: LlamaCppEngine) -> None:
    plain = _events(engine, _greedy(12, logprobs=0))
    first = plain[0].logprobs[0]
    ban = dict.fromkeys(_token_ids(engine, first.token), -100.0)
    again = _events(engine, _greedy(12, logit_bias=ban, logprobs=0))
    tokens = [lp.token for e in again for lp in e.logprobs]
    assert first.token not in tokens and len(tokens) == 12
    # A ban is a ban even under sampling: none of 5 seeds draws it.
    for seed in range(5):
        sampled = _events(engine, replace(_greedy(12, logit_bias=ban, logprobs=0), temperature=1.5, seed=seed))
        assert first.token not in [lp.token for e in sampled for lp in e.logprobs]


def test_a_bias_on_a_token_the_model_lacks_is_a_400(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest) as err:
        _events(engine, _greedy(logit_bias={10**6: 5.0}))
    assert err.value.param == "logit_bias"


def test_top_k_1_and_min_p_1_are_greedy(engine: LlamaCppEngine) -> None:
    greedy, _ = _text(engine, _greedy())
    sampled = GenerationRequest(messages=CHAT, max_tokens=24, temperature=1.5, seed=4)
    assert _text(engine, sampled)[0] != greedy  # at this temperature the seed does draw something else
    assert _text(engine, replace(sampled, top_k=1))[0] == greedy
    assert _text(engine, replace(sampled, min_p=1.0))[0] == greedy  # only tokens as likely as the best survive


def test_top_k_and_min_p_default_to_llama_cpps_recipe(engine: LlamaCppEngine) -> None:
    sampled = GenerationRequest(messages=CHAT, max_tokens=24, temperature=1.0, seed=9)
    assert _text(engine, sampled) == _text(engine, replace(sampled, top_k=40, min_p=0.05))


# -- grammars ----------------------------------------------------------------------------------------------
def test_grammar_constrains_the_answer(engine: LlamaCppEngine) -> None:
    for seed in range(4):
        text, finish = _text(
            engine, GenerationRequest(messages=CHAT, max_tokens=10, temperature=1.0, seed=seed, grammar=YES_NO)
        )
        assert text in ("yes", "no")
        assert finish == "stop"  # the grammar closed, then only EOS was allowed


def test_grammar_beats_json_mode(engine: LlamaCppEngine) -> None:
    assert _text(engine, _greedy(10, grammar=YES_NO, json_mode=True))[0] in ("yes", "no")


@pytest.mark.parametrize("bad", ["root ::= undefined-rule", 'root ::= "unterminated', "no rules here", 'x ::= "a"'])
def test_invalid_gbnf_is_a_400_before_anything_runs(engine: LlamaCppEngine, bad: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _events(engine, _greedy(grammar=bad))
    assert err.value.param == "grammar"
    if isinstance(engine, BatchedLlamaCppEngine):
        assert engine.free_slots == engine.slots  # a refused request takes no slot
    assert _text(engine, _greedy(5))[1] == "length"  # and the engine goes on as before


def test_a_grammar_is_parsed_once_per_distinct_text(engine: LlamaCppEngine) -> None:
    grammars = engine._grammars
    assert grammars is not None
    other = 'root ::= "maybe" | "never"'
    before = grammars.compiled
    for _ in range(3):
        assert _text(engine, _greedy(10, grammar=other))[0] in ("maybe", "never")
    assert grammars.compiled - before <= 1  # 0 when an earlier test of this engine already parsed it


def test_lazy_grammar_leaves_text_free_until_a_trigger(engine: LlamaCppEngine) -> None:
    free = _events(engine, _greedy(12, logprobs=0))
    text = "".join(e.text for e in free)
    tokens = [lp.token for e in free for lp in e.logprobs]
    # A trigger that first appears where the 4th token starts, so the text before it is the free answer's.
    start = sum(len(t) for t in tokens[:3])
    trigger = tokens[3]
    assert text.find(trigger) == start, "pick a token whose text does not occur earlier"
    lazy = _greedy(12, grammar=f'root ::= "{trigger}" ("yes" | "no")', grammar_triggers=[trigger])
    out, finish = _text(engine, lazy)
    assert out[:start] == text[:start]
    assert out[start:] in (trigger + "yes", trigger + "no") and finish == "stop"


def test_lazy_grammar_after_a_biased_trigger(engine: LlamaCppEngine) -> None:
    q = _token_id(engine, "q")
    req = GenerationRequest(
        messages=CHAT,
        max_tokens=12,
        temperature=0.8,
        seed=1,
        logit_bias={q: 100.0},
        grammar='root ::= "q" ("yes" | "no") "!"',
        grammar_triggers=["q"],
    )
    out, finish = _text(engine, req)
    assert re.fullmatch(r"q(yes|no)!", out) and finish == "stop"
    # Without the trigger word the same grammar never applies: the bias alone rules.
    assert _text(engine, replace(req, grammar_triggers=["zzz-never"]))[0] == "q" * 12


def test_a_trigger_whose_token_carries_text_the_grammar_rejects_leaves_the_answer_free(
    engine: LlamaCppEngine,
) -> None:
    """llama.cpp's own lazy grammar aborts the process here (a C++ exception through its C API): the token "ab"
    completes the trigger "a", and the grammar, which wants "x" next, rejects its "b"."""
    ab = _token_id(engine, "ab")
    req = _greedy(5, logit_bias={ab: 100.0}, grammar='root ::= "a" "x"', grammar_triggers=["a"])
    assert _text(engine, req) == ("ab" * 5, "length")


def test_the_first_trigger_in_the_text_starts_the_grammar() -> None:
    lazy = LazyGrammar('root ::= "x"', ["<call>", "[CALL]"])
    assert lazy.feed(b"some <ca") is None
    assert lazy.feed(b"ll") is None  # "<call" is not "<call>" yet
    assert lazy.feed(b'> {"a') == b'<call> {"a'  # over three tokens, with the last token's own text after it
    again = LazyGrammar('root ::= "x"', ["<call>", "[CALL]"])
    assert again.feed(b"[CA") is None
    assert again.feed(b"LM]") is None  # the tail it keeps moves on
    assert again.feed(b"[CALL") is None
    assert again.feed(b"]") == b"[CALL]"
    other = LazyGrammar('root ::= "x"', ["<call>", "[CALL]"])
    assert other.feed(b"x [CALL] <call>") == b"[CALL] <call>"  # the earliest of two in one token


# -- the two engines agree -----------------------------------------------------------------------------------
def test_batched_and_single_stream_agree_on_every_field(engines: dict[str, LlamaCppEngine]) -> None:
    q = _token_id(engines["single"], "q")
    reqs = [
        GenerationRequest(
            messages=CHAT, max_tokens=16, temperature=0.9, seed=3, presence_penalty=1.0, frequency_penalty=0.5
        ),
        GenerationRequest(
            messages=CHAT, max_tokens=16, temperature=1.1, seed=5, top_k=5, min_p=0.1, repeat_penalty=1.3
        ),
        GenerationRequest(messages=CHAT, max_tokens=16, temperature=0.7, seed=8, logit_bias={q: 2.5}, logprobs=3),
        GenerationRequest(messages=CHAT, max_tokens=8, temperature=1.0, seed=2, grammar=YES_NO, logprobs=2),
        GenerationRequest(prompt="Once upon", max_tokens=10, temperature=0, logit_bias={q: -100.0}, logprobs=5),
    ]
    for req in reqs:
        batched, single = _events(engines["batched"], req), _events(engines["single"], req)
        assert [(e.text, e.finish_reason, e.usage) for e in batched] == [
            (e.text, e.finish_reason, e.usage) for e in single
        ]
        # The same tokens and alternatives; values agree to float noise (the prompt is read in other batch shapes).
        got, want = [lp for e in batched for lp in e.logprobs], [lp for e in single for lp in e.logprobs]
        assert [(lp.token, [t.token for t in lp.top]) for lp in got] == [
            (lp.token, [t.token for t in lp.top]) for lp in want
        ]
        assert [lp.logprob for lp in got] == pytest.approx([lp.logprob for lp in want], abs=1e-4)
        usage = single[-1].usage
        assert usage is not None
        assert len(got) == (usage.completion_tokens if req.logprobs is not None else 0)
