"""The Anthropic Messages API of a real `lokal serve` on the tiny model, through Anthropic's own client.

The tiny model has random weights: its words are noise, so these tests check shapes, counts, stops and the
agreement between the forms of one answer (streamed and whole, counted and generated), never words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest
from anthropic.types import Message, MessageParam, ToolChoiceToolParam, ToolParam

from lokal.errors import EngineError, ModelUnloaded, Overloaded
from lokal.protocol.messages import TOOL_ERROR_PREFIX, ErrorBody, MessagesRequest, ToolChoice
from lokal.server.chat_chunks import whole_chunks
from lokal.server.messages_adapter import StopScanner, Translator
from lokal.server.routes.messages import error_event
from tests.support.server import LokalServer

USER: list[MessageParam] = [{"role": "user", "content": "Say something."}]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        # Bounded, so that the grammar ends the call within max_tokens even on random weights
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "array", "items": {"type": "integer", "enum": [1, 2, 3]}, "maxItems": 3},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    },
}
# Sampling fields go in extra_body: this SDK version dropped them from its signature, but clients still send them.
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0.0}}


@pytest.fixture(scope="module")
def client(lokal_server: LokalServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=lokal_server.url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


def _text(message: Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _events(server: LokalServer, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stream's named events as sent (name, data), comment frames left out."""
    out: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("POST", server.url + "/v1/messages", json={**body, "stream": True}, timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                assert name is not None and name == data["type"], (name, data)
                out.append((name, data))
    return out


# -- text ------------------------------------------------------------------------------------------------------
def test_plain_message(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model="tiny", max_tokens=8, messages=USER, **GREEDY)
    assert m.type == "message" and m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.model == "tiny-cpu:1"
    assert [b.type for b in m.content] == ["text"] and _text(m)
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None
    assert m.usage.output_tokens == 8
    assert m.usage.input_tokens > 0


def test_system_and_multi_turn_reach_the_prompt(client: anthropic.Anthropic) -> None:
    base = client.messages.create(model="tiny", max_tokens=1, messages=USER)
    system = client.messages.create(model="tiny", max_tokens=1, messages=USER, system="You are terse.")
    blocks = client.messages.create(
        model="tiny", max_tokens=1, messages=USER, system=[{"type": "text", "text": "You are terse."}]
    )
    turns: list[MessageParam] = [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi, what can I do?"}]},
        {"role": "user", "content": [{"type": "text", "text": "Say something."}]},
    ]
    multi = client.messages.create(model="tiny", max_tokens=4, messages=turns)
    assert system.usage.input_tokens > base.usage.input_tokens
    assert blocks.usage.input_tokens == system.usage.input_tokens
    assert multi.usage.input_tokens > base.usage.input_tokens
    assert multi.stop_reason in {"end_turn", "max_tokens"}


def test_count_tokens_matches_the_answer_usage(client: anthropic.Anthropic) -> None:
    turns: list[MessageParam] = [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Say something."},
    ]
    for kwargs in ({"messages": USER}, {"messages": turns, "system": "Be brief."}):
        counted = client.messages.count_tokens(model="tiny", **kwargs)
        answer = client.messages.create(model="tiny", max_tokens=2, **kwargs)
        assert counted.input_tokens == answer.usage.input_tokens > 0


def test_stop_sequence_is_reported(client: anthropic.Anthropic) -> None:
    free = _text(client.messages.create(model="tiny", max_tokens=40, messages=USER, **GREEDY))
    # A piece of the greedy answer, past its start, whose first occurrence is where it stands.
    stop = next(
        free[i : i + 3] for i in range(4, len(free) - 3) if free[i : i + 3].strip() and free.find(free[i : i + 3]) == i
    )
    cut = client.messages.create(model="tiny", max_tokens=40, messages=USER, stop_sequences=[stop, "\x00"], **GREEDY)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert _text(cut) == free[: free.find(stop)]
    assert 0 < cut.usage.output_tokens < 40
    assert cut.usage.input_tokens == client.messages.count_tokens(model="tiny", messages=USER).input_tokens
    with client.messages.stream(model="tiny", max_tokens=40, messages=USER, stop_sequences=[stop], **GREEDY) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == _text(cut) and final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    never = client.messages.create(model="tiny", max_tokens=6, messages=USER, stop_sequences=["\x00\x01"], **GREEDY)
    assert never.stop_reason == "max_tokens" and never.stop_sequence is None


# -- streaming -------------------------------------------------------------------------------------------------
def test_stream_text_equals_the_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="tiny", max_tokens=16, messages=USER, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and text == _text(final)
    whole = client.messages.create(model="tiny", max_tokens=16, messages=USER, **GREEDY)
    assert text == _text(whole)
    assert final.stop_reason == whole.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_stream_event_order(lokal_server: LokalServer) -> None:
    events = _events(lokal_server, {"model": "tiny", "max_tokens": 6, "messages": USER})
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for n, d in events if n == "content_block_delta")
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 6 and delta["usage"]["input_tokens"] > 0


# -- tools -----------------------------------------------------------------------------------------------------
ONE_CALL: ToolChoiceToolParam = {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


def _forced(**extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Weather in Paris for 3 days?"}],
        "tools": [WEATHER],
        "tool_choice": ONE_CALL,
        **extra,
    }


def test_forced_tool_use_validates_against_the_schema(client: anthropic.Anthropic) -> None:
    m = client.messages.create(**_forced())
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1, m.content
    assert m.stop_reason == "tool_use"
    assert uses[0].name == "get_weather" and uses[0].id.startswith("toolu_")
    jsonschema.validate(uses[0].input, WEATHER["input_schema"])
    counted = client.messages.count_tokens(
        model="tiny", messages=_forced()["messages"], tools=[WEATHER], tool_choice=ONE_CALL
    )
    assert counted.input_tokens == m.usage.input_tokens


def test_parallel_forced_calls_each_validate(client: anthropic.Anthropic) -> None:
    m = client.messages.create(**_forced(tool_choice={"type": "tool", "name": "get_weather"}, max_tokens=120))
    uses = [b for b in m.content if b.type == "tool_use"]
    assert uses and m.stop_reason in {"tool_use", "max_tokens"}, m
    # Random weights may go on calling until max_tokens: then the last call is the one cut short.
    for use in uses if m.stop_reason == "tool_use" else uses[:-1]:
        jsonschema.validate(use.input, WEATHER["input_schema"])
    assert len({u.id for u in uses}) == len(uses)


def test_streamed_tool_use_assembles_to_the_same_input(lokal_server: LokalServer, client: anthropic.Anthropic) -> None:
    events = _events(lokal_server, _forced(temperature=0.0))
    starts = [d for n, d in events if n == "content_block_start" and d["content_block"]["type"] == "tool_use"]
    assert len(starts) == 1
    index, block = starts[0]["index"], starts[0]["content_block"]
    assert block["name"] == "get_weather" and block["id"].startswith("toolu_") and block["input"] == {}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == index]
    assert deltas and all(d["type"] == "input_json_delta" for d in deltas)
    streamed = json.loads("".join(d["partial_json"] for d in deltas))
    jsonschema.validate(streamed, WEATHER["input_schema"])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    whole = client.messages.create(**_forced(), **GREEDY)
    assert [b.input for b in whole.content if b.type == "tool_use"] == [streamed]
    with client.messages.stream(**_forced(), **GREEDY) as stream:
        final = stream.get_final_message()
    assert [b.input for b in final.content if b.type == "tool_use"] == [streamed]
    assert final.stop_reason == "tool_use"


def test_tool_result_turn_is_accepted(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**_forced())
    use = next(b for b in first.content if b.type == "tool_use")
    turns: list[MessageParam] = [
        *_forced()["messages"],
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"},
                {"type": "text", "text": "Thanks. And tomorrow?"},
            ],
        },
    ]
    answer = client.messages.create(model="tiny", max_tokens=8, messages=turns, tools=[WEATHER])
    assert answer.stop_reason in {"end_turn", "max_tokens", "tool_use"}
    failed = client.messages.create(
        model="tiny",
        max_tokens=4,
        messages=[
            *turns[:2],
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use.id,
                        "is_error": True,
                        "content": [{"type": "text", "text": "city not found"}],
                    },
                ],
            },
        ],
        tools=[WEATHER],
    )
    assert failed.usage.input_tokens > first.usage.input_tokens
    assert answer.usage.input_tokens > first.usage.input_tokens


def test_output_format_json_schema(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 12}, "score": {"type": "integer"}},
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    m = client.messages.create(
        model="tiny",
        max_tokens=120,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert m.stop_reason == "end_turn", m
    jsonschema.validate(json.loads(_text(m)), schema)


# -- errors ----------------------------------------------------------------------------------------------------
def _post(client: anthropic.Anthropic, body: dict[str, Any]) -> Message:
    return client.post("/v1/messages", body=body, cast_to=Message)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "tiny", "messages": USER}, "max_tokens"),
        ({"model": "tiny", "max_tokens": 0, "messages": USER}, "max_tokens"),
        ({"model": "tiny", "max_tokens": 4, "messages": []}, "messages"),
        ({"model": "tiny", "max_tokens": 4, "messages": USER, "temperature": 1.5}, "temperature"),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": USER,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "thinking",
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                        ],
                    }
                ],
            },
            "image",
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
                        ],
                    }
                ],
            },
            "document",
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": USER,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "web_search",
        ),
        ({"model": "tiny", "max_tokens": 4, "messages": USER, "tool_choice": {"type": "any"}}, "needs tools"),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": USER,
                "tools": [WEATHER],
                "tool_choice": {"type": "tool", "name": "nope"},
            },
            "nope",
        ),
        (
            {"model": "tiny", "max_tokens": 4, "messages": [*USER, {"role": "assistant", "content": "Sure"}]},
            "assistant",
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "y"}]},
                    *USER,
                ],
            },
            "tool_result",
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 4,
                "messages": USER,
                "mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}],
            },
            "mcp_servers",
        ),
    ],
    ids=[
        "no-max-tokens",
        "zero-max-tokens",
        "no-messages",
        "hot",
        "thinking",
        "image",
        "document",
        "server-tool",
        "choice-without-tools",
        "unknown-tool",
        "prefill",
        "result-in-assistant",
        "mcp",
    ],
)
def test_bad_requests_are_anthropic_400s(client: anthropic.Anthropic, body: dict[str, Any], needle: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        _post(client, body)
    err = info.value.body
    assert isinstance(err, dict) and err["type"] == "error", err
    assert err["error"]["type"] == "invalid_request_error"
    assert needle in err["error"]["message"], err


def test_unknown_model_is_a_404(client: anthropic.Anthropic, lokal_server: LokalServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=4, messages=USER)
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=USER)
    with (
        pytest.raises(anthropic.NotFoundError),
        client.messages.stream(model="no-such-model", max_tokens=4, messages=USER) as s,
    ):
        s.get_final_message()
    resp = httpx.post(
        lokal_server.url + "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    # The OpenAI routes keep OpenAI's shape.
    other = httpx.post(lokal_server.base_url + "/chat/completions", json={"model": "no-such-model", "messages": USER})
    assert other.status_code == 404 and set(other.json()["error"]) == {"message", "type", "param", "code"}


def test_embeddings_model_cannot_count_or_chat(client: anthropic.Anthropic) -> None:
    for call in (
        lambda: client.messages.count_tokens(model="all-minilm-l6-v2", messages=USER),
        lambda: client.messages.create(model="all-minilm-l6-v2", max_tokens=2, messages=USER),
    ):
        with pytest.raises(anthropic.BadRequestError):
            call()


def test_failure_mid_stream_is_an_error_event(client: anthropic.Anthropic, lokal_server: LokalServer) -> None:
    # tiny-coder: the same file under its own alias, so that "tiny" stays loaded for the other tests
    with client.messages.stream(model="tiny-coder", max_tokens=1500, messages=USER) as stream:
        events = iter(stream)
        assert next(e for e in events if e.type == "text")
        unloaded = httpx.post(lokal_server.url + "/lokal/models/tiny-coder/unload", params={"force": "true"})
        assert unloaded.status_code == 200, unloaded.text
        with pytest.raises(anthropic.APIStatusError) as info:
            for _ in events:
                pass
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "api_error" and "unloaded" in body["error"]["message"]


# -- the pure parts ---------------------------------------------------------------------------------------------
def test_request_becomes_a_chat_request() -> None:
    req = MessagesRequest.model_validate(
        {
            "model": "tiny",
            "max_tokens": 9,
            "system": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Use tools.", "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Oslo", "days": [1]},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_2",
                            "name": "get_weather",
                            "input": {"city": "Rome", "days": [2]},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Snow"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [{"type": "text", "text": "timeout"}],
                        },
                        {"type": "text", "text": "And?"},
                    ],
                },
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "metadata": {"user_id": "u1"},
        }
    )
    fields = req.chat_fields()

    def call(i: str, city: str, days: int) -> dict[str, Any]:
        arguments = json.dumps({"city": city, "days": [days]})
        return {"id": i, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}

    assert fields["messages"] == [
        {"role": "system", "content": "Be brief.\nUse tools."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [call("toolu_1", "Oslo", 1), call("toolu_2", "Rome", 2)],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Snow"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": TOOL_ERROR_PREFIX + "timeout"},
        {"role": "user", "content": "And?"},
    ]
    function = {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER["input_schema"]}
    assert fields["tools"] == [{"type": "function", "function": function}]
    assert fields["tool_choice"] == "required" and fields["parallel_tool_calls"] is False
    named = ToolChoice(type="tool", name="get_weather").to_chat()
    assert named == {"type": "function", "function": {"name": "get_weather"}}
    assert ToolChoice(type="none").to_chat() == "none" and ToolChoice(type="auto").to_chat() == "auto"
    plain = MessagesRequest.model_validate(
        {"model": "tiny", "max_tokens": 5, "messages": USER, "temperature": 0.2, "top_k": 3, "stop_sequences": ["x"]}
    ).to_chat_stream()
    assert (plain.max_tokens, plain.temperature, plain.top_k, plain.stream, plain.include_usage) == (
        5,
        0.2,
        3,
        True,
        True,
    )
    assert plain.stop is None  # watched by the adapter, which can say which one matched


def _feed_all(scanner: StopScanner, pieces: list[str]) -> str:
    out = "".join(scanner.feed(p) for p in pieces)
    return out + (scanner.flush() if scanner.matched is None else "")


@pytest.mark.parametrize(
    ("pieces", "stops", "text", "matched"),
    [
        (["hello ", "wor", "ld"], ["world"], "hello ", "world"),
        (["ab", "c"], ["abd"], "abc", None),
        (["xEN", "D!"], ["END"], "x", "END"),
        (["abcd"], ["bc", "abcd"], "a", "bc"),  # the one the model completed first
        (["a", "b", "c"], [], "abc", None),
        (["aXb"], ["X", "b"], "a", "X"),
    ],
)
def test_stop_scanner(pieces: list[str], stops: list[str], text: str, matched: str | None) -> None:
    whole = StopScanner(stops)
    assert _feed_all(whole, pieces) == text and whole.matched == matched
    joined = "".join(pieces)
    by_char = StopScanner(stops)  # split at every character: the same answer
    assert _feed_all(by_char, list(joined)) == text and by_char.matched == matched


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_translator_blocks_and_parallel_calls() -> None:
    tr = Translator("m")
    events = [*tr.start()]
    for chunk in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Let me look."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a1", "function": {"name": "f", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b2", "function": {"name": "g", "arguments": "{}"}}]}),
        _chunk({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}},
    ]:
        events += tr.feed(chunk)
    events += tr.end()
    kinds = [e.type for e in events]
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    m = tr.message()
    assert [c.model_dump() for c in m.content] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_a1", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "toolu_b2", "name": "g", "input": {}},
    ]
    assert m.stop_reason == "tool_use" and m.usage.model_dump() == {"input_tokens": 7, "output_tokens": 9}


def test_translator_keeps_text_held_for_a_stop_before_a_call() -> None:
    tr = Translator("m", ["END"])
    tr.feed(_chunk({"content": "Looking E"}))
    tr.feed(_chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{}"}}]}))
    tr.feed(_chunk({}, "tool_calls"))
    tr.end()
    m = tr.message()
    assert [c.type for c in m.content] == ["text", "tool_use"] and m.content[0].model_dump()["text"] == "Looking E"
    assert m.stop_reason == "tool_use" and m.stop_sequence is None


def test_a_whole_chat_answer_reads_like_its_stream() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "On it.",
                    "tool_calls": [
                        {"id": "call_z", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    tr = Translator("m")
    for chunk in whole_chunks(body):
        tr.feed(chunk)
    tr.end()
    assert tr.message().model_dump(exclude={"id"}) == {
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "text", "text": "On it."},
            {"type": "tool_use", "id": "toolu_z", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }


def test_a_call_cut_by_max_tokens_keeps_what_was_written() -> None:
    tr = Translator("m")
    tr.feed(
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"city": "Os'}}]})
    )
    tr.feed(_chunk({}, "length"))
    tr.end()
    m = tr.message()
    assert m.stop_reason == "max_tokens"
    assert m.content[0].model_dump() == {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"city": "Os"}}
    broken = Translator("m")
    broken.feed(
        _chunk({"tool_calls": [{"index": 0, "id": "call_b", "function": {"name": "f", "arguments": '{"a": '}}]})
    )
    broken.feed(_chunk({}, "tool_calls"))
    broken.end()
    with pytest.raises(EngineError):  # a call the model finished must be whole JSON
        broken.message()


def test_translator_refuses_interleaved_calls() -> None:
    tr = Translator("m")
    tr.feed(_chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{"}}]}))
    tr.feed(_chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}))
    with pytest.raises(EngineError):
        tr.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))


def test_error_shapes() -> None:
    frame = error_event(ModelUnloaded("gone"))
    assert frame.startswith("event: error\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "api_error", "message": "gone"},
    }
    assert ErrorBody.of(Overloaded("busy")).error.type == "overloaded_error"
