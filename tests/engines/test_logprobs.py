"""Logprobs on the real llama.cpp engines (tiny GGUF): one per generated token, from the raw logits the sampler
read (checked against llama-cpp-python's own logits), riding on the event that carries the token's text."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import GenerationEvent, GenerationRequest, TokenLogprob
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine
from lokal.engines.logprobs import LogprobReader, top_ids
from lokal.engines.textstream import TokenStream

PROMPT = "Once upon a time"


def _load(engine: LlamaCppEngine, path: Path) -> LlamaCppEngine:
    variant = Variant(id="m:1", path=str(path))
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, path)
    return engine


@pytest.fixture(scope="module", params=["single", "batched"])
def engine(request: pytest.FixtureRequest, tiny_gguf: Path) -> Iterator[LlamaCppEngine]:
    e = _load(LlamaCppEngine() if request.param == "single" else BatchedLlamaCppEngine(parallel=2), tiny_gguf)
    yield e
    e.unload()


def _events(engine: LlamaCppEngine, req: GenerationRequest) -> list[GenerationEvent]:
    return list(engine.generate(req, threading.Event()))


def _logprobs(events: list[GenerationEvent]) -> list[TokenLogprob]:
    return [lp for e in events for lp in e.logprobs]


@pytest.mark.parametrize("top", [0, 1, 5, 20])
def test_one_logprob_per_token_with_sorted_alternatives(engine: LlamaCppEngine, top: int) -> None:
    events = _events(engine, GenerationRequest(prompt=PROMPT, max_tokens=12, temperature=0, logprobs=top))
    entries = _logprobs(events)
    usage = events[-1].usage
    assert usage is not None and len(entries) == usage.completion_tokens == 12
    for e in entries:
        assert e.logprob <= 0.0
        assert len(e.top) == top
        values = [t.logprob for t in e.top]
        assert values == sorted(values, reverse=True) and all(v <= 0.0 for v in values)
        if top:
            assert (e.top[0].token, e.top[0].logprob) == (e.token, e.logprob)  # greedy took the most likely
        assert tuple(e.token.encode()) == e.bytes
    # Each event's entries are exactly the tokens its text is made of.
    assert all("".join(lp.token for lp in ev.logprobs) == ev.text for ev in events)


def test_a_sampled_token_matches_its_entry_among_the_alternatives(engine: LlamaCppEngine) -> None:
    req = GenerationRequest(prompt=PROMPT, max_tokens=24, temperature=1.5, seed=7, logprobs=20)
    entries = _logprobs(_events(engine, req))
    assert len(entries) == 24
    found = 0
    for e in entries:
        same = [t for t in e.top if t.bytes == e.bytes]
        if same:
            assert same[0].logprob == e.logprob
            found += 1
    assert found >= 12  # at top-k 40 most draws are among the 20 best
    assert any(e.top[0].bytes != e.bytes for e in entries)  # and this temperature drew some that were not best


def test_logprobs_are_the_raw_logits_of_the_model(engine: LlamaCppEngine, tiny_gguf: Path) -> None:
    """Against llama-cpp-python with logits_all: a greedy walk over the same prompt, row by row."""
    from llama_cpp import Llama

    ref = Llama(model_path=str(tiny_gguf), n_ctx=256, logits_all=True, verbose=False)
    try:
        tokens = ref.tokenize(PROMPT.encode(), add_bos=True, special=False)
        # Biases, penalties and temperature change what is drawn, never the logprobs reported.
        req = GenerationRequest(
            prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3, presence_penalty=0.5, logit_bias={300: 1.0}
        )
        got = _logprobs(_events(engine, req))
        for entry in got:
            ref.eval(tokens[ref.n_tokens :])
            row = np.asarray(ref.scores[ref.n_tokens - 1], dtype=np.float64)
            logp = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
            best = np.argsort(-logp, kind="stable")[:3]
            assert [ref.detokenize([int(t)]) for t in best] == [bytes(t.bytes) for t in entry.top]
            assert [t.logprob for t in entry.top] == pytest.approx(logp[best].tolist(), abs=1e-4)
            chosen = next(t for t in best if bytes(entry.bytes) == ref.detokenize([int(t)]))
            assert entry.logprob == pytest.approx(float(logp[chosen]), abs=1e-4)
            tokens.append(int(chosen))
    finally:
        ref.close()


def test_tokens_held_by_a_stop_string_ride_with_the_text_and_swallowed_ones_are_dropped(
    engine: LlamaCppEngine,
) -> None:
    free = _logprobs(_events(engine, GenerationRequest(prompt=PROMPT, max_tokens=12, temperature=0, logprobs=0)))
    text = "".join(e.token for e in free)
    start = sum(len(e.token) for e in free[:5])
    stop = free[5].token + free[6].token
    assert text.find(stop) == start
    # The stop string swallows tokens 5 and 6: only the first five are reported, with the text before it.
    events = _events(engine, GenerationRequest(prompt=PROMPT, max_tokens=12, temperature=0, logprobs=0, stop=[stop]))
    assert "".join(e.text for e in events) == text[:start]
    assert [e.token for e in _logprobs(events)] == [e.token for e in free[:5]]
    assert events[-1].finish_reason == "stop"
    # A stop that begins like token 5 but never completes holds its text back; it comes out later, with
    # its logprob, and nothing is lost or doubled.
    held = _events(
        engine,
        GenerationRequest(prompt=PROMPT, max_tokens=12, temperature=0, logprobs=0, stop=[stop + "\x00never"]),
    )
    assert "".join(e.text for e in held) == text
    assert [e.token for e in _logprobs(held)] == [e.token for e in free]
    event_of = [i for i, ev in enumerate(held) for _ in ev.logprobs]  # which event carried each token
    assert event_of[5] == event_of[6] == event_of[7]  # held until token 7 showed it was no stop, then sent


def test_no_logprobs_costs_nothing(engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("logprobs were computed for a request that did not ask")

    monkeypatch.setattr(LogprobReader, "read", refuse)
    events = _events(engine, GenerationRequest(prompt=PROMPT, max_tokens=6, temperature=0))
    assert len(events) > 1 and all(e.logprobs == () for e in events)


# -- the stream that attaches them (pure logic) ---------------------------------------------------------------
def test_a_character_split_over_two_tokens_goes_out_once_with_both() -> None:
    s = TokenStream()
    data = "é".encode()
    assert s.feed(data[:1], -0.5) is None  # half a character: nothing to show yet
    ev = s.feed(data[1:], -0.25)
    assert ev is not None and ev.text == "é"
    assert [(lp.token, lp.logprob, lp.bytes) for lp in ev.logprobs] == [("", -0.5, (0xC3,)), ("é", -0.25, (0xA9,))]


def test_the_flush_carries_the_tokens_still_held() -> None:
    s = TokenStream(["STOP"])
    first = s.feed(b"ab S", -1.0)
    assert first is not None and first.text == "ab " and [lp.token for lp in first.logprobs] == ["ab S"]
    assert s.feed(b"T", -2.0) is None
    tail = s.flush()
    assert tail is not None and tail.text == "ST" and [lp.token for lp in tail.logprobs] == ["T"]


def test_a_token_that_completes_a_stop_string_is_dropped() -> None:
    s = TokenStream(["STOP"])
    assert s.feed(b"x", -1.0) is not None
    assert s.feed(b"ST", -1.0) is None
    assert s.feed(b"OP!", -1.0) is None
    assert s.stopped and s.flush() is None


@pytest.mark.parametrize("vocab", [7, 320, 5000, 151936])
def test_the_fast_top_n_is_the_exact_top_n_ties_by_id(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    for trial in range(6):
        logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
        if trial % 2:
            logits = np.round(logits)  # many ties, across the cut as well
        for n in (1, 5, 20):
            n = min(n, vocab)
            assert top_ids(logits, n).tolist() == np.lexsort((np.arange(vocab), -logits))[:n].tolist()
