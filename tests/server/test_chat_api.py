"""The OpenAI API of a real `lokal serve` on the tiny model, through the official openai client."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from lokal.engines.base import GenerationEvent, GenerationRequest
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.errors import EngineError
from tests.support.server import LokalServer

USER = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def client(lokal_server: LokalServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


def _prompt_tokens(gguf: Path, text: str) -> int:
    from llama_cpp import Llama

    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    return len(llm.tokenize(text.encode(), add_bos=True, special=True))


def test_non_streaming_chat_counts_tokens_like_the_tokenizer(client: OpenAI, tiny_gguf: Path) -> None:
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == "tiny-cpu:1"
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage is not None
    assert r.usage.completion_tokens == 12
    expected = _prompt_tokens(tiny_gguf, "<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n")
    assert r.usage.prompt_tokens == expected
    assert r.usage.total_tokens == expected + 12


def test_streaming_matches_non_streaming_and_reports_usage(client: OpenAI) -> None:
    full = client.chat.completions.create(model="tiny", messages=USER, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model="tiny",
        messages=USER,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finishes, usage = [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                pieces.append(ch.delta.content)
            if ch.finish_reason:
                finishes.append(ch.finish_reason)
    assert len(pieces) > 3  # really streamed, not one blob
    assert "".join(pieces) == full.choices[0].message.content
    assert finishes == ["length"]
    assert usage is not None and usage.completion_tokens == 16


def test_stop_sequence_truncates_and_reports_stop(client: OpenAI) -> None:
    text = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0)
    content = text.choices[0].message.content or ""
    words = content.split()
    stop = words[len(words) // 2]
    cut = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0, stop=[stop])
    out = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in out
    assert content.startswith(out)
    assert len(out) < len(content)


def test_seed_makes_sampling_repeatable(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=1.0, seed=seed)
        return r.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1  # the seed really drives the sampler


def test_temperature_zero_is_deterministic(client: OpenAI) -> None:
    outs = {
        client.chat.completions.create(model="tiny", messages=USER, max_tokens=10, temperature=0)
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(outs) == 1


def test_json_mode_constrains_output_to_json(client: OpenAI) -> None:
    import json

    for max_tokens in (40, 400):
        r = client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=max_tokens,
            temperature=0,
            response_format={"type": "json_object"},
        )
        content = r.choices[0].message.content or ""
        assert content.lstrip().startswith("{"), content
        if r.choices[0].finish_reason == "stop":  # a cut-off answer is a JSON prefix, as at OpenAI
            assert isinstance(json.loads(content), dict)


def test_concurrent_requests_all_complete(client: OpenAI) -> None:
    def one(i: int) -> int:
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=8, temperature=0
        )
        assert r.usage is not None
        return r.usage.completion_tokens

    with cf.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(6))) == [8] * 6


def test_text_completions(client: OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=7, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage is not None and r.usage.completion_tokens == 7
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=7, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].text


def test_embeddings_are_unit_vectors(client: OpenAI) -> None:
    r = client.embeddings.create(model="all-minilm-l6-v2", input=["local models", "a cat on a mat"])
    assert len(r.data) == 2
    for d in r.data:
        assert len(d.embedding) == 384
        assert abs(sum(x * x for x in d.embedding) - 1.0) < 1e-3
    assert r.usage.prompt_tokens > 0


def test_models_list_shows_cached_models_and_labels_synthetic(client: OpenAI) -> None:
    ids = {m.id: m for m in client.models.list().data}
    assert {"tiny", "tiny-coder", "all-minilm-l6-v2"} <= set(ids)
    extra = ids["tiny"].model_extra or {}
    assert extra["lokal"]["synthetic"] is True
    assert "qwen2.5-0.5b" not in ids  # in the catalog, but not downloaded


def test_health_and_metrics(lokal_server: LokalServer, client: OpenAI) -> None:
    client.chat.completions.create(model="tiny", messages=USER, max_tokens=3)
    assert httpx.get(lokal_server.url + "/health").json()["status"] == "ok"
    text = httpx.get(lokal_server.url + "/metrics").text
    for name in (
        "lokal_requests_total",
        "lokal_tokens_total",
        "lokal_queue_depth",
        "lokal_time_to_first_token_seconds_bucket",
        "lokal_output_tokens_per_second_bucket",
        "lokal_loaded_models",
    ):
        assert name in text, name
    assert 'lokal_tokens_total{direction="out",model="tiny"}' in text


# -- n choices ---------------------------------------------------------------------------------------------------
def test_n_choices_whole_and_streamed(client: OpenAI) -> None:
    greedy = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0)
    both = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0, n=2)
    assert [c.index for c in both.choices] == [0, 1]
    assert {c.message.content for c in both.choices} == {greedy.choices[0].message.content}
    assert both.usage is not None and greedy.usage is not None
    assert both.usage.prompt_tokens == greedy.usage.prompt_tokens  # the prompt counts once
    assert both.usage.completion_tokens == 16

    def sampled() -> list[str]:
        r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=1.0, seed=5, n=3,
                                           extra_body={"ignore_eos": True})
        return [c.message.content or "" for c in r.choices]

    first = sampled()
    assert len(set(first)) == 3  # seed, seed+1, seed+2: different draws
    assert sampled() == first  # and repeatable

    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0, n=2,
                                            stream=True, stream_options={"include_usage": True})
    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert texts == {0: greedy.choices[0].message.content, 1: greedy.choices[0].message.content}
    assert finishes == {0: "length", 1: "length"}
    assert usage is not None and usage.completion_tokens == 16


def test_completions_n_choices(client: OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="Once", max_tokens=5, temperature=1.0, seed=3, n=2,
                                  extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1] and r.choices[0].text != r.choices[1].text
    assert r.usage is not None and r.usage.completion_tokens == 10


# -- sampling controls -------------------------------------------------------------------------------------------
def _say(client: OpenAI, **kw: object) -> str:
    args: dict[str, object] = {"max_tokens": 16, "temperature": 0, **kw}
    extra = {k: args.pop(k) for k in ("top_k", "min_p", "repeat_penalty") if k in args}
    r = client.chat.completions.create(model="tiny", messages=USER, extra_body={"ignore_eos": True, **extra},
                                       **args)  # type: ignore[call-overload]
    return str(r.choices[0].message.content)


def test_logit_bias_forces_and_bans_tokens(client: OpenAI, tiny_gguf: Path) -> None:
    from llama_cpp import Llama

    vocab = Llama(str(tiny_gguf), vocab_only=True, verbose=False)
    t = vocab.tokenize(b"t", add_bos=False, special=False)[-1]  # the piece "\u2581t"
    assert _say(client, max_tokens=8, logit_bias={str(t): 100}).split() == ["t"] * 8
    completion = client.completions.create(model="tiny", prompt="Once", max_tokens=4, temperature=0,
                                           logit_bias={str(t): 100})
    assert completion.choices[0].text.split() == ["t"] * 4
    ids = {vocab.detokenize([i]).decode(): i for i in range(261, vocab.n_vocab())}  # word pieces: text -> id

    def generated(**kw: Any) -> list[int]:
        r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0, logprobs=True,
                                           extra_body={"ignore_eos": True}, **kw)
        assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content is not None
        return [ids.get(e.token, ids.get(" " + e.token, -1)) for e in r.choices[0].logprobs.content]

    base = generated()
    assert -1 not in base
    banned = generated(logit_bias={str(tok): -100 for tok in set(base)})
    assert banned and not set(banned) & set(base)


def test_penalties_change_the_output(client: OpenAI) -> None:
    base = _say(client, max_tokens=32)
    assert _say(client, max_tokens=32, presence_penalty=2.0) != base
    assert _say(client, max_tokens=32, frequency_penalty=2.0) != base
    assert _say(client, max_tokens=32, repeat_penalty=1.8) != base


def test_top_k_and_min_p_cut_the_draw(client: OpenAI) -> None:
    greedy = _say(client)
    for seed in (1, 2):
        assert _say(client, temperature=1.5, seed=seed, top_k=1) == greedy  # only the likeliest token is left
        assert _say(client, temperature=1.5, seed=seed, min_p=1.0) == greedy
    assert len({_say(client, temperature=1.5, seed=s, top_k=0) for s in (1, 2, 3)}) > 1  # 0: no cut


# -- streams that start before their first token, and fail after it ------------------------------------------------
class Scripted(LlamaCppEngine):
    """The real llama.cpp engine, with words in the last message that slow its first event or break it."""

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        said = req.messages[-1].content if req.messages else req.prompt or ""
        if "slow" in said:
            time.sleep(0.8)  # a long queue or prompt read
        if "fail-now" in said:
            raise EngineError("the engine failed before its first token")
        for n, ev in enumerate(super().generate(req, cancel)):
            if "fail-later" in said and n == 3:
                raise EngineError("the engine failed mid-answer")
            yield ev


@pytest.fixture(scope="module")
def scripted(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.server.inprocess import serve
    from tests.support.models import tiny_entry

    with serve(tmp_path_factory.mktemp("scripted"), [tiny_entry("tiny", tiny_gguf, ["general"])],
               lambda _: Scripted(n_threads=1)) as url:
        yield url


@pytest.fixture
def quick_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    from lokal.protocol import sse
    from lokal.server import serving

    monkeypatch.setattr(serving, "FIRST_EVENT_WAIT_S", 0.1)
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.2)


def _raw_stream(url: str, said: str) -> tuple[int, list[str]]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": said}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
        return r.status_code, [line for line in r.iter_lines() if line]


def test_a_slow_first_token_gets_keep_alive_comments(
    closing: contextlib.ExitStack, scripted: str, quick_keepalive: None
) -> None:
    status, lines = _raw_stream(scripted, "slow please")
    assert status == 200
    first = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first >= 2 and set(lines[:first]) == {": keep-alive"}
    assert ": keep-alive" not in lines[first:] and lines[-1] == "data: [DONE]"
    client = closing.enter_context(OpenAI(base_url=scripted + "/v1", api_key="x", max_retries=0))
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "slow again"}], max_tokens=8, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)  # the SDK skips comments


def test_an_early_engine_error_is_an_http_error(scripted: str, quick_keepalive: None) -> None:
    status, lines = _raw_stream(scripted, "fail-now")
    assert status == 500 and json.loads(lines[0])["error"]["code"] == "engine_error"


def test_an_engine_error_after_the_stream_started_is_an_error_frame(
    closing: contextlib.ExitStack, scripted: str, quick_keepalive: None
) -> None:
    for said in ("slow then fail-now", "fail-later"):
        status, lines = _raw_stream(scripted, said)
        assert status == 200 and "data: [DONE]" not in lines
        error = json.loads(lines[-1][len("data: "):])["error"]
        assert error["code"] == "engine_error" and "the engine failed" in error["message"]
    client = closing.enter_context(OpenAI(base_url=scripted + "/v1", api_key="x", max_retries=0))
    with pytest.raises(openai.APIError, match="mid-answer"):
        for _ in client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "fail-later"}],
                                                max_tokens=8, stream=True):
            pass
    with pytest.raises(openai.InternalServerError, match="mid-answer"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "fail-later"}], max_tokens=8)
