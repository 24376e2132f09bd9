"""logprobs through a real `lokal serve` with the official openai client: one entry per generated token, on chat
and completions, streamed and whole, with top_logprobs alternatives; the tokens spell the text."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.support.server import LokalServer

USER = [{"role": "user", "content": "Say something."}]
N = 8


@pytest.fixture(scope="module")
def client(lokal_server: LokalServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


def _check_entry(entry: Any, top: int, greedy: bool) -> None:
    assert entry.logprob <= 0 and math.isfinite(entry.logprob)
    assert entry.bytes == list(entry.token.encode())
    assert len(entry.top_logprobs) == top
    probs = [t.logprob for t in entry.top_logprobs]
    assert probs == sorted(probs, reverse=True)
    if greedy and top:  # at temperature 0 the sampled token is the likeliest one
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)


@pytest.mark.parametrize("top", [0, 3, 20])
def test_chat_logprobs_one_per_token(client: OpenAI, top: int) -> None:
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=N, temperature=0, logprobs=True,
                                       top_logprobs=top, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None and r.usage is not None
    assert len(lp.content) == r.usage.completion_tokens == N
    assert "".join(e.token for e in lp.content) == r.choices[0].message.content
    for entry in lp.content:
        _check_entry(entry, top, greedy=True)


def test_chat_logprobs_streamed(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=N, temperature=0, logprobs=True,
                                           top_logprobs=2, extra_body={"ignore_eos": True})
    entries, text = [], ""
    for chunk in client.chat.completions.create(model="tiny", messages=USER, max_tokens=N, temperature=0,
                                                logprobs=True, top_logprobs=2, stream=True,
                                                extra_body={"ignore_eos": True}):
        for ch in chunk.choices:
            text += ch.delta.content or ""
            if ch.logprobs and ch.logprobs.content:
                entries += ch.logprobs.content
    assert len(entries) == N and "".join(e.token for e in entries) == text
    assert whole.choices[0].logprobs is not None and whole.choices[0].logprobs.content is not None
    assert [e.token for e in entries] == [e.token for e in whole.choices[0].logprobs.content]
    for entry in entries:
        _check_entry(entry, 2, greedy=True)


def test_sampled_tokens_are_not_always_the_likeliest(client: OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=1.5, seed=4,
                                       logprobs=True, top_logprobs=1, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None and len(lp.content) == 24
    assert any(e.token != e.top_logprobs[0].token for e in lp.content)  # the logits the sampler saw, not a re-run
    assert all(e.logprob <= e.top_logprobs[0].logprob + 1e-4 for e in lp.content)


def test_no_logprobs_unless_asked(client: OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=3)
    assert r.choices[0].logprobs is None
    c = client.completions.create(model="tiny", prompt="Once", max_tokens=3)
    assert c.choices[0].logprobs is None


@pytest.mark.parametrize("stream", [False, True])
def test_completion_logprobs(client: OpenAI, stream: bool) -> None:
    kw: dict[str, Any] = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": N, "temperature": 0,
                          "logprobs": 2, "extra_body": {"ignore_eos": True}}
    tokens: list[str] = []
    token_logprobs: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    text = ""
    chunks = client.completions.create(**kw, stream=True) if stream else [client.completions.create(**kw)]
    for chunk in chunks:
        for ch in chunk.choices:
            text += ch.text
            if ch.logprobs:
                tokens += ch.logprobs.tokens or []
                token_logprobs += ch.logprobs.token_logprobs or []
                tops += ch.logprobs.top_logprobs or []
                offsets += ch.logprobs.text_offset or []
    assert len(tokens) == len(token_logprobs) == len(tops) == len(offsets) == N
    assert "".join(tokens) == text
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(N)]  # where each token starts in the text
    for token, logprob, top in zip(tokens, token_logprobs, tops, strict=True):
        assert len(top) == 2 and max(top.values()) == pytest.approx(logprob, abs=1e-4) and top[token] == logprob
