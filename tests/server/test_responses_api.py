"""The Responses API (/v1/responses) of a real `lokal serve` on the tiny model, through the official openai client.

The tiny model's text is noise, so these tests check shapes and agreement rather than words: at temperature 0
a response says exactly what the same conversation gets from /v1/chat/completions (same text, same token
counts), which is what an adapter over chat completions must give. Function calls and structured outputs come
from grammars, so their arguments and text validate against their schemas even on random weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from lokal.engines.base import GenerationEvent, GenerationRequest
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.errors import EngineError, ModelUnloaded
from lokal.protocol.responses_api import ResponsesRequest, read_items
from lokal.protocol.responses_output import request_items
from lokal.server.chat_chunks import whole_chunks
from lokal.server.response_store import ResponseStore, StoredResponse
from lokal.server.responses_adapter import Builder
from tests.support.server import LokalServer

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": WEATHER,
        "strict": True,
    },
    {"type": "function", "name": "get_time", "description": "The time in a zone", "parameters": TIME},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


@pytest.fixture(scope="module")
def client(lokal_server: LokalServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


def _chat(client: OpenAI, messages: list[dict[str, Any]], max_tokens: int) -> Any:
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0)  # type: ignore[arg-type]


def _message_text(item: Any) -> str:
    assert item.type == "message" and item.role == "assistant"
    assert [p.type for p in item.content] == ["output_text"]
    assert item.content[0].annotations == []
    return str(item.content[0].text)


# -- text ------------------------------------------------------------------------------------------------------
def test_text_input_answers_as_the_same_chat_would(client: OpenAI) -> None:
    r = client.responses.create(model="tiny", input="Say something.", max_output_tokens=10, temperature=0)
    chat = _chat(client, [{"role": "user", "content": "Say something."}], 10)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.model == "tiny-cpu:1"
    assert len(r.output) == 1 and r.output[0].id.startswith("msg_")
    assert _message_text(r.output[0]) == r.output_text == chat.choices[0].message.content
    assert r.usage is not None and chat.usage is not None
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.temperature == 0 and r.max_output_tokens == 10 and r.tools == [] and r.store is True


def test_message_items_with_instructions(client: OpenAI) -> None:
    items: Any = [
        {"role": "user", "content": "Hi."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me more."}]},
    ]
    r = client.responses.create(model="tiny", instructions="Be brief.", input=items, max_output_tokens=8, temperature=0)
    chat = _chat(
        client,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me more."},
        ],
        8,
    )
    assert r.instructions == "Be brief."
    assert r.output_text == chat.choices[0].message.content
    assert r.usage is not None and chat.usage is not None
    assert r.usage.input_tokens == chat.usage.prompt_tokens


def test_max_output_tokens_makes_the_response_incomplete(client: OpenAI) -> None:
    r = client.responses.create(model="tiny", input="Write a long story.", max_output_tokens=3, temperature=0)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete"
    assert r.usage is not None and r.usage.output_tokens == 3


# -- store and previous_response_id ---------------------------------------------------------------------------
def test_previous_response_id_continues_the_stored_conversation(client: OpenAI) -> None:
    first = client.responses.create(model="tiny", input="Hello.", max_output_tokens=6, temperature=0)
    second = client.responses.create(
        model="tiny", previous_response_id=first.id, input="And then?", max_output_tokens=6, temperature=0
    )
    chat = _chat(
        client,
        [
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And then?"},
        ],
        6,
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None and chat.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens == chat.usage.prompt_tokens
    assert second.output_text == chat.choices[0].message.content

    newest_first = list(client.responses.input_items.list(second.id))
    assert [(i.type, getattr(i, "role", None)) for i in newest_first] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert newest_first[1].id == first.output[0].id  # the stored output item, as it was
    oldest_first = client.responses.input_items.list(second.id, order="asc", limit=2)
    assert [i.id for i in oldest_first.data] == [i.id for i in reversed(newest_first)][:2]
    assert oldest_first.has_more and oldest_first.first_id == oldest_first.data[0].id
    rest = client.responses.input_items.list(second.id, order="asc", after=oldest_first.last_id)
    assert [i.id for i in rest.data] == [newest_first[0].id] and not rest.has_more


def test_retrieve_and_delete(client: OpenAI, lokal_server: LokalServer) -> None:
    r = client.responses.create(model="tiny", input="Keep this.", max_output_tokens=4, temperature=0)
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()
    deleted = httpx.delete(f"{lokal_server.base_url}/responses/{r.id}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": r.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_store_false_is_not_kept(client: OpenAI) -> None:
    r = client.responses.create(model="tiny", input="Forget this.", store=False, max_output_tokens=4, temperature=0)
    assert r.store is False and r.status in ("completed", "incomplete")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="tiny", input="More.", previous_response_id=r.id, max_output_tokens=4)
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_unknown_ids_are_openai_shaped_404s(lokal_server: LokalServer) -> None:
    for method, path in [("GET", "resp_nope"), ("DELETE", "resp_nope"), ("GET", "resp_nope/input_items")]:
        got = httpx.request(method, f"{lokal_server.base_url}/responses/{path}")
        assert got.status_code == 404, (method, path)
        error = got.json()["error"]
        assert error["type"] == "invalid_request_error" and "resp_nope" in error["message"]


# -- streaming -------------------------------------------------------------------------------------------------
TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def _squeeze(types: list[str]) -> list[str]:
    """Event types with runs of deltas as one."""
    return [t for i, t in enumerate(types) if not (t.endswith(".delta") and i and types[i - 1] == t)]


def test_stream_sends_the_responses_events_in_order(client: OpenAI) -> None:
    whole = client.responses.create(model="tiny", input="Stream this.", max_output_tokens=12, temperature=0)
    events = list(
        client.responses.create(model="tiny", input="Stream this.", max_output_tokens=12, temperature=0, stream=True)
    )
    types = [e.type for e in events]
    assert _squeeze(types) == ["response.created", "response.in_progress", *TEXT_EVENTS, "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, final = events[0].response, events[-1].response  # type: ignore[union-attr]
    assert created.status == "in_progress" and created.output == [] and created.id == final.id
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas == done.text == final.output_text == whole.output_text  # type: ignore[union-attr]
    assert final.usage is not None and whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens == 12
    assert client.responses.retrieve(final.id).output_text == deltas


def test_stream_helper_with_a_json_schema_format(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "word": {"type": "string", "maxLength": 8}},
        "required": ["n", "word"],
        "additionalProperties": False,
    }
    fmt: Any = {"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}}
    with client.responses.stream(model="tiny", input="A thing.", text=fmt, max_output_tokens=48, temperature=0) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text
    jsonschema.validate(json.loads(final.output_text), schema)
    assert final.text is not None and final.text.format is not None and final.text.format.type == "json_schema"


def test_json_schema_and_json_object_formats(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
        },
        "required": ["ok", "tags"],
        "additionalProperties": False,
    }
    fmt: Any = {"format": {"type": "json_schema", "name": "flags", "schema": schema, "strict": True}}
    r = client.responses.create(model="tiny", input="Flags.", text=fmt, max_output_tokens=64, temperature=0)
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), schema)
    obj: Any = {"format": {"type": "json_object"}}
    r = client.responses.create(model="tiny", input="An object.", text=obj, max_output_tokens=40, temperature=0)
    assert r.output_text.lstrip().startswith("{") and r.text.format.type == "json_object"  # type: ignore[union-attr]
    if r.status == "completed":  # a cut-off answer is a JSON prefix, as at OpenAI
        assert isinstance(json.loads(r.output_text), dict)


def test_output_text_logprobs(client: OpenAI) -> None:
    r = client.responses.create(
        model="tiny",
        input="Logprobs.",
        include=["message.output_text.logprobs"],
        top_logprobs=2,
        max_output_tokens=5,
        temperature=0,
    )
    part = r.output[0].content[0]  # type: ignore[union-attr]
    assert part.logprobs is not None and len(part.logprobs) == 5
    assert "".join(lp.token for lp in part.logprobs) == part.text
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in part.logprobs)
    assert r.top_logprobs == 2
    events = list(
        client.responses.create(
            model="tiny",
            input="Logprobs.",
            include=["message.output_text.logprobs"],
            top_logprobs=2,
            max_output_tokens=5,
            temperature=0,
            stream=True,
        )
    )
    streamed = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert [lp.token for lp in streamed] == [lp.token for lp in part.logprobs]


# -- function tools --------------------------------------------------------------------------------------------
def _call(item: Any, name: str) -> dict[str, Any]:
    assert item.type == "function_call" and item.name == name and item.status == "completed"
    assert item.id.startswith("fc_") and item.call_id
    arguments: dict[str, Any] = json.loads(item.arguments)
    jsonschema.validate(arguments, SCHEMAS[name])
    return arguments


def test_forced_function_call_then_its_output_continues(client: OpenAI) -> None:
    r = client.responses.create(
        model="tiny",
        input="What is the weather in Oslo?",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,  # the grammar ends after one call (with more allowed, noise may go on)
        max_output_tokens=160,
        temperature=0,
    )
    assert r.status == "completed"
    calls = [i for i in r.output if i.type == "function_call"]
    assert len(calls) >= 1
    _call(calls[0], "get_weather")
    assert r.tool_choice.type == "function" and r.tool_choice.name == "get_weather"  # type: ignore[union-attr]
    assert [t.name for t in r.tools] == ["get_weather", "get_time"]  # type: ignore[union-attr]

    result: Any = [{"type": "function_call_output", "call_id": c.call_id, "output": '{"temp": 21}'} for c in calls]
    stored = client.responses.create(
        model="tiny", previous_response_id=r.id, input=result, tools=TOOLS, max_output_tokens=6, temperature=0
    )
    sent_back: Any = ["What is the weather in Oslo?", *r.output, *result]
    sent_back[0] = {"role": "user", "content": sent_back[0]}
    whole = client.responses.create(model="tiny", input=sent_back, tools=TOOLS, max_output_tokens=6, temperature=0)
    assert stored.usage is not None and whole.usage is not None and r.usage is not None
    assert stored.usage.input_tokens == whole.usage.input_tokens > r.usage.input_tokens
    assert [i.type for i in stored.output] == [i.type for i in whole.output]
    kinds = [i.type for i in client.responses.input_items.list(stored.id, order="asc")]
    assert kinds == ["message", *["function_call"] * len(calls), *["function_call_output"] * len(calls)]


def test_allowed_tools_narrow_a_required_call(client: OpenAI) -> None:
    choice: Any = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}
    r = client.responses.create(
        model="tiny",
        input="Time?",
        tools=TOOLS,
        tool_choice=choice,
        parallel_tool_calls=False,
        max_output_tokens=160,
        temperature=0,
    )
    calls = [i for i in r.output if i.type == "function_call"]
    assert calls and all(_call(c, "get_time") for c in calls)


def test_streamed_function_call_arguments(client: OpenAI) -> None:
    stream = client.responses.create(
        model="tiny",
        input="Weather?",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=160,
        temperature=0,
        stream=True,
    )
    events = list(stream)
    kinds = _squeeze([e.type for e in events])
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = next(e for e in events if e.type == "response.output_item.added").item  # type: ignore[union-attr]
    assert added.type == "function_call" and added.arguments == "" and added.status == "in_progress"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    final = events[-1].response  # type: ignore[union-attr]
    assert deltas == done.arguments == final.output[0].arguments  # type: ignore[union-attr]
    assert final.output[0].call_id == added.call_id
    _call(final.output[0], "get_weather")


@pytest.mark.parametrize("streamed", [False, True])
def test_an_agents_sdk_agent_on_the_responses_api_calls_a_function(lokal_server: LokalServer, streamed: bool) -> None:
    """An OpenAI Agents SDK agent, unchanged, on OpenAIResponsesModel (whole and streamed responses). Its turn
    after the call would be the tiny model's noise, cut at max_tokens, which the SDK treats as a failed turn:
    the agent stops at the tool's result instead (the result turn is tested above, without the SDK)."""
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)  # traces go to OpenAI's servers; lokal keeps everything local
    calls: list[str] = []

    @agents.function_tool
    def lookup_city(city: Literal["Paris", "Oslo"]) -> str:  # an enum: noise cannot run on in a free string
        """Facts about a city.

        Args:
            city: The city's name.
        """
        calls.append(city)
        return f"{city} has 12345 people."

    async def run() -> Any:
        client = AsyncOpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0)
        agent = agents.Agent(
            name="facts",
            instructions="Answer with the tool.",
            model=agents.OpenAIResponsesModel(model="tiny", openai_client=client),
            model_settings=agents.ModelSettings(
                tool_choice="required", parallel_tool_calls=False, max_tokens=160, temperature=0.0
            ),
            tools=[lookup_city],
            tool_use_behavior="stop_on_first_tool",
        )
        try:
            if not streamed:
                return await agents.Runner.run(agent, "Tell me about Paris.", max_turns=2)
            result = agents.Runner.run_streamed(agent, "Tell me about Paris.", max_turns=2)
            async for _ in result.stream_events():
                pass
            return result
        finally:
            await client.close()

    result = asyncio.run(run())
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert result.final_output == f"{calls[0]} has 12345 people."


# -- refusals --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type", "'web_search'"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools.0.type", "'file_search'"),
        ({"tool_choice": {"type": "computer_use_preview"}}, "tool_choice", "'computer_use_preview'"),
        ({"reasoning": {"effort": "high"}}, "reasoning", "reasoning"),
        ({"background": True}, "background", "background"),
        ({"truncation": "auto"}, "truncation", "truncation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type", "item_reference"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.content.0.type",
            "images",
        ),
        ({"tool_choice": {"type": "function", "name": "nope"}, "tools": TOOLS}, "tool_choice", "'nope'"),
        ({"include": ["message.nothing"]}, "include", "message.nothing"),
        (
            {"tools": TOOLS, "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}}},
            "text.format",
            "together with tools",
        ),
    ],
)
def test_what_lokal_cannot_do_is_a_400_naming_it(
    client: OpenAI, fields: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(**{"model": "tiny", "input": "x", **fields})
    body: Any = err.value.body
    assert body["param"] == param and words in body["message"]


def test_a_malformed_body_is_a_400(lokal_server: LokalServer) -> None:
    url = f"{lokal_server.base_url}/responses"
    bad = httpx.post(url, content=b'{"model": "tiny", "input": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.post(url, json={"model": "tiny"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"


# -- fuzz: whatever the body, never a 5xx --------------------------------------------------------------------
_text = st.text(max_size=12) | st.sampled_from(["<|im_start|>system", "\x00", "\ud800", "function", "message"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_part = st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "input_image", "x"]) | _values},
                              optional={"text": _text | _values})  # fmt: skip
_item = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "function_call", "function_call_output", "item_reference"]) | _values,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | _values,
        "content": _text | st.lists(_part, max_size=2) | _values,
        "call_id": _text,
        "name": _text,
        "arguments": _text,
        "output": _text | _values,
    },
)
_tool = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "web_search"]) | _values},
    optional={"name": st.sampled_from(["f", "get_time", "bad name"]) | _values, "parameters": _values},
)
_FIELDS: dict[str, Any] = {
    "input": _text | st.lists(_item, max_size=3) | _values,
    "instructions": _text | _values,
    "tools": st.lists(_tool, max_size=2) | _values,
    "tool_choice": st.sampled_from(["none", "auto", "required", {"type": "function", "name": "f"}]) | _values,
    "text": st.fixed_dictionaries({"format": _values}) | _values,
    "temperature": _values,
    "top_p": _values,
    "stream": st.booleans(),
    "store": _values,
    "previous_response_id": _text | _values,
    "include": st.lists(st.sampled_from(["message.output_text.logprobs", "x"]), max_size=2) | _values,
    "top_logprobs": _values,
    "reasoning": _values,
    "truncation": _values,
    "metadata": _values,
    "parallel_tool_calls": _values,
}


@pytest.mark.timeout(240)
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=st.fixed_dictionaries({"model": st.just("tiny"), "max_output_tokens": st.integers(1, 4)}, optional=_FIELDS))
def test_no_body_gets_a_5xx(lokal_server: LokalServer, body: dict[str, Any]) -> None:
    raw = json.dumps(body, ensure_ascii=True).encode()
    got = httpx.post(
        f"{lokal_server.base_url}/responses", content=raw, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert got.status_code < 500, (raw[:300], got.status_code, got.text[:500])
    if got.status_code >= 400:
        assert set(got.json()["error"]) == {"message", "type", "param", "code"}


# -- a generation that fails after its stream began -----------------------------------------------------------
class _FailsLater(LlamaCppEngine):
    """The real llama.cpp engine, failing after a few tokens when the last message says so."""

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        said = req.messages[-1].content if req.messages else ""
        for n, ev in enumerate(super().generate(req, cancel)):
            if "fail-later" in said and n == 3:
                raise EngineError("the engine failed mid-answer")
            yield ev


def test_a_failure_mid_stream_ends_it_with_response_failed(
    closing: contextlib.ExitStack,
    tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.server.inprocess import serve
    from tests.support.models import tiny_entry

    home = tmp_path_factory.mktemp("failing")
    with serve(home, [tiny_entry("tiny", tiny_gguf, ["general"])], lambda _: _FailsLater(n_threads=1)) as url:
        client = closing.enter_context(OpenAI(base_url=url + "/v1", api_key="x", max_retries=0))
        events = list(client.responses.create(model="tiny", input="fail-later", max_output_tokens=12, stream=True))
        assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
        assert events[-1].type == "response.failed"
        failed = events[-1].response  # type: ignore[union-attr]
        assert failed.status == "failed" and failed.error is not None
        assert failed.error.code == "engine_error" and "mid-answer" in failed.error.message
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert client.responses.retrieve(failed.id).status == "failed"  # kept as it ended, as at OpenAI
        with pytest.raises(openai.InternalServerError, match="mid-answer"):
            client.responses.create(model="tiny", input="fail-later", max_output_tokens=12)


# -- the store itself ------------------------------------------------------------------------------------------
def test_the_store_keeps_rows_for_its_retention_only(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "home" / "r.sqlite3")
    row = StoredResponse("resp_a", 0.0, [{"id": "msg_1"}], [{"id": "msg_2"}], {"id": "resp_a", "é": "ü"})
    store.put(row)
    assert store.get("resp_a") is None  # created at the epoch: long past the 30 days
    fresh = StoredResponse("resp_b", 1e12, row.input, row.output, row.response)
    store.put(fresh)
    assert store.get("resp_b") == fresh and fresh.conversation == [{"id": "msg_1"}, {"id": "msg_2"}]
    assert store.delete("resp_b") and not store.delete("resp_b")


# -- the adapter on its own: chat chunks in, items and events out ---------------------------------------------
def _builder() -> Builder:
    body = ResponsesRequest.model_validate({"model": "tiny", "input": "x", "tools": TOOLS})
    items = read_items([i.model_dump(mode="json") for i in request_items(body)])
    return Builder(body, body.to_chat(items, stream=True))


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _fn(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Let me look."}),
    _chunk(_fn(0, '{"zone": ', "call_a", "get_time")),
    _chunk(_fn(0, '"UTC"}')),
    _chunk(_fn(1, '{"zone": "CET"}', "call_b", "get_time")),
    _chunk({}, "tool_calls"),
    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}},
]


def test_builder_makes_one_item_per_text_run_and_call() -> None:
    b = _builder()
    events = [e for c in CHUNKS for e in b.feed(c)] + b.end()
    assert _squeeze([e.type for e in events]) == [
        "response.created",
        "response.in_progress",
        *TEXT_EVENTS[:3],
        *TEXT_EVENTS[3:],  # the message is done when the first call begins
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = b.response()
    assert final.status == "completed" and final.usage.total_tokens == 12
    assert [(i.type, getattr(i, "call_id", None)) for i in final.output] == [
        ("message", None),
        ("function_call", "call_a"),
        ("function_call", "call_b"),
    ]
    assert [i.arguments for i in final.output[1:]] == ['{"zone": "UTC"}', '{"zone": "CET"}']
    assert len({i.id for i in final.output}) == 3

    whole = _builder()
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"zone": "CET"}'},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }
    for chunk in whole_chunks(body):
        whole.feed(chunk)
    whole.end()
    same = whole.response()
    strip = {"id": True, "output": {"__all__": {"id"}}, "created_at": True}
    assert same.model_dump(exclude=strip) == final.model_dump(exclude=strip)


def test_builder_refuses_a_call_resumed_after_the_next_began() -> None:
    b = _builder()
    for c in CHUNKS[2:5]:
        b.feed(c)
    with pytest.raises(EngineError):
        b.feed(_chunk(_fn(0, "more")))


def test_builder_gives_an_empty_answer_its_message() -> None:
    b = _builder()
    events = b.feed(_chunk({"role": "assistant", "content": ""}, "stop")) + b.end()
    assert _squeeze([e.type for e in events]) == [
        "response.created",
        "response.in_progress",
        *[t for t in TEXT_EVENTS if not t.endswith(".delta")],
        "response.completed",
    ]
    message = b.response().output[0]
    assert message.type == "message" and message.content[0].text == "" and message.status == "completed"


def test_builder_fails_with_the_error() -> None:
    b = _builder()
    b.feed(CHUNKS[1])
    events = b.fail(ModelUnloaded("the model was unloaded"))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "model_unloaded"
    assert failed.output[0].status == "incomplete"
