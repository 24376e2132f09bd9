"""Tool calling through a real `lokal serve` with the official openai client: forced, required and auto calls,
whole and streamed (deltas assembled and the arguments validated against the tool's schema), a tool-result
turn, parallel calls, and a model without a tool-call format refused by name.

The tiny model's text is noise, so calls come from grammars: a forced call is constrained from the first token;
for `auto`, "tiny-marked" (the same weights with `<tool_call>` as one token, as Qwen2.5's vocabulary has it) is
pushed to open a call with logit_bias, and the lazy grammar takes over from there. An upstream that parses its
own calls (a remote engine) is stood in for in-process.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import EngineInfo, GenerationEvent, GenerationRequest, TokenLogprob, ToolCallDelta, Usage
from lokal.gguf import synthetic
from lokal.gguf.synthetic import SHAPES, write_gguf
from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
               "required": ["zone"], "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": WEATHER_SCHEMA, "strict": True}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a zone",
                                      "parameters": TIME_SCHEMA}},
]
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]
MARKERS = ["<tool_call>", "</tool_call>"]
TINY = "tiny-marked"


def _marked_gguf(directory: Path) -> Path:
    """The tiny model with the Hermes call markers as single user-defined tokens (the last two ids)."""
    plain = synthetic._vocab

    def vocab(n: int) -> tuple[list[str], list[float], list[int]]:
        tokens, scores, types = plain(n)
        tokens[-2:], types[-2:] = MARKERS, [4, 4]  # user-defined: read whole from text, written back as text
        return tokens, scores, types

    with mock.patch.object(synthetic, "_vocab", vocab):
        return write_gguf(directory / "tiny-marked.gguf", SHAPES["tiny"], "f32", like="tiny", seed=0)


OPEN_CALL = str(SHAPES["tiny"].n_vocab - 2)  # the id of "<tool_call>" in tiny-marked


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("tools-home")
    models = tmp_path_factory.mktemp("tools-models")
    gemma = write_gguf(models / "tiny-gemma.gguf", SHAPES["tiny"], "f32", like="gemma-2-2b", seed=0)
    write_catalog(home, [
        tiny_entry("tiny", tiny_gguf, ["general"]),  # family from the GGUF's own template
        tiny_entry("tiny-marked", _marked_gguf(models), ["general"], chat_template="chatml"),  # family from the catalog
        tiny_entry("tiny-gemma", gemma, ["general"], chat_template="gemma"),
    ])
    with LokalServer(home) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: LokalServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


def _check_call(name: str, arguments: str) -> dict[str, Any]:
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return dict(args)


def _assemble(stream: Iterator[Any]) -> tuple[str, dict[int, dict[str, Any]], str | None]:
    """Content, calls by index ({id, name, arguments, pieces}) and finish_reason of a streamed answer, checking
    that each call is named once, before its argument fragments."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for d in ch.delta.tool_calls or []:
                if d.id is not None:
                    assert d.index not in calls and d.function and d.function.name and d.type == "function"
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": "", "pieces": 0}
                else:
                    assert d.index in calls and (d.function is None or d.function.name is None)
                if d.function and d.function.arguments:
                    calls[d.index]["arguments"] += d.function.arguments
                    calls[d.index]["pieces"] += 1
            finish = ch.finish_reason or finish
    return content, calls, finish


def test_a_named_tool_choice_forces_that_call(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=TINY, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    _check_call("get_weather", call.function.arguments)


def test_the_tool_format_is_read_from_the_gguf_template(client: OpenAI) -> None:
    """"tiny" names no template family in the catalog: its GGUF's own Jinja template (Hermes markers) says it."""
    r = client.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and [c.function.name for c in calls] == ["get_time"]
    _check_call("get_time", calls[0].function.arguments)


def test_a_named_call_streams_as_deltas(client: OpenAI) -> None:
    content, calls, finish = _assemble(client.chat.completions.create(
        model=TINY, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    ))
    assert finish == "tool_calls" and content == "" and list(calls) == [0]
    assert calls[0]["name"] == "get_time" and calls[0]["pieces"] >= 1
    _check_call("get_time", calls[0]["arguments"])


@pytest.mark.parametrize("seed", [1, 2])
def test_required_makes_a_valid_call_of_some_tool(client: OpenAI, seed: int) -> None:
    r = client.chat.completions.create(model=TINY, messages=ASK, tools=TOOLS, tool_choice="required",
                                       max_tokens=160, temperature=1.0, seed=seed, parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    _check_call(calls[0].function.name, calls[0].function.arguments)
    content, streamed, finish = _assemble(client.chat.completions.create(
        model=TINY, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=160, temperature=1.0,
        seed=seed, parallel_tool_calls=False, stream=True))
    assert finish == "tool_calls" and "<tool_call>" not in content and len(streamed) == 1
    assert streamed[0]["name"] == calls[0].function.name  # the same draw, streamed
    assert _check_call(streamed[0]["name"], streamed[0]["arguments"]) == json.loads(calls[0].function.arguments)


def test_auto_calls_once_the_model_opens_a_call(client: OpenAI) -> None:
    """logit_bias makes the model write `<tool_call>`; the lazy grammar then holds it to a valid call."""
    kw: dict[str, Any] = {"model": "tiny-marked", "messages": ASK, "tools": TOOLS, "tool_choice": "auto",
                          "max_tokens": 160, "temperature": 0, "logit_bias": {OPEN_CALL: 100},
                          "parallel_tool_calls": False}
    r = client.chat.completions.create(**kw)
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1, r
    _check_call(calls[0].function.name, calls[0].function.arguments)
    content, streamed, finish = _assemble(client.chat.completions.create(**kw, stream=True))
    assert finish == "tool_calls" and "<tool_call" not in content and len(streamed) == 1
    _check_call(streamed[0]["name"], streamed[0]["arguments"])


def test_auto_without_a_call_is_plain_text(client: OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-marked", messages=ASK, tools=TOOLS, max_tokens=12, temperature=0,
                                       logit_bias={OPEN_CALL: -100})
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"


def test_parallel_calls(client: OpenAI) -> None:
    """With end-of-generation banned, the model goes on after its first call, and the grammar only lets it go on
    with another call; with parallel_tool_calls false the grammar ends after one."""
    kw: dict[str, Any] = {"model": "tiny-marked", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
                          "max_tokens": 300, "temperature": 0}
    no_end = {OPEN_CALL: 100, "2": -100, str(synthetic.EOS_ID): -100}  # both end-of-generation tokens
    r = client.chat.completions.create(**kw, logit_bias=no_end, parallel_tool_calls=True)
    calls = r.choices[0].message.tool_calls or []
    assert len(calls) >= 2 and len({c.id for c in calls}) == len(calls)
    complete = calls if r.choices[0].finish_reason == "tool_calls" else calls[:-1]  # max_tokens may cut the last
    for c in complete:
        _check_call(c.function.name, c.function.arguments)
    _, streamed, _ = _assemble(client.chat.completions.create(**kw, logit_bias=no_end, stream=True))
    assert sorted(streamed) == list(range(len(streamed))) and len(streamed) >= 2
    assert [streamed[i]["name"] for i in sorted(streamed)] == [c.function.name for c in calls]
    one = client.chat.completions.create(**kw, logit_bias={OPEN_CALL: 100}, parallel_tool_calls=False)
    assert one.choices[0].finish_reason == "tool_calls" and len(one.choices[0].message.tool_calls or []) == 1


def test_a_tool_result_turn_is_rendered(client: OpenAI) -> None:
    call = {"id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius", "days": [1]}'}}
    turn = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"temperature": 12}'}]
    r = client.chat.completions.create(model=TINY, messages=turn, tools=TOOLS, max_tokens=4)  # type: ignore[arg-type]
    bare = client.chat.completions.create(model=TINY, messages=ASK, tools=TOOLS, max_tokens=4)  # type: ignore[arg-type]
    assert r.usage is not None and bare.usage is not None
    assert r.usage.prompt_tokens > bare.usage.prompt_tokens + 20  # the call and its result are in the prompt
    assert r.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_tool_choice_none_answers_in_text(client: OpenAI) -> None:
    r = client.chat.completions.create(model=TINY, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=6)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


def test_a_model_without_a_tool_call_format_is_a_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-gemma", messages=ASK, tools=TOOLS, max_tokens=4)
    body: Any = err.value.body
    assert body["param"] == "tools" and "tiny-gemma" in body["message"] and "tool-call format" in body["message"]
    ok = client.chat.completions.create(model="tiny-gemma", messages=ASK, max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_bad_tools_are_a_400_naming_them(server: LokalServer) -> None:
    for tools, param in (([{"type": "function", "function": {"name": "has space"}}], "tools"),
                         ([{"type": "retrieval"}], "tools")):
        r = httpx.post(server.base_url + "/chat/completions", timeout=30,
                       json={"model": "tiny", "messages": ASK, "tools": tools})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


# -- an upstream that reads its model's calls itself -------------------------------------------------------------
class Upstream:
    """Stands in for the remote engine: tool calls arrive ready-made in GenerationEvent.tool_calls."""

    def __init__(self) -> None:
        self.info = EngineInfo(context_length=4096, extra={"upstream": "http://upstream.test/v1"})
        self.seen: list[GenerationRequest] = []

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        pass

    def count_tokens(self, req: GenerationRequest) -> int:
        return 5

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        self.seen.append(req)
        yield GenerationEvent(text="Checking. ")
        yield GenerationEvent(tool_calls=(ToolCallDelta(0, id="call_up0", name="get_time"),))
        yield GenerationEvent(tool_calls=(ToolCallDelta(0, arguments='{"zone": '),))
        yield GenerationEvent(tool_calls=(ToolCallDelta(0, arguments='"UTC"}'),))
        yield GenerationEvent(finish_reason="tool_calls", usage=Usage(5, 9))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    def unload(self) -> None:
        pass


def test_an_upstreams_own_tool_calls_pass_through(
    closing: contextlib.ExitStack, tmp_path: Path, tiny_gguf: Path
) -> None:
    from tests.server.inprocess import serve

    engine = Upstream()
    with serve(tmp_path / "home", [tiny_entry("up", tiny_gguf, ["general"])], lambda _: engine) as url:
        client = closing.enter_context(OpenAI(base_url=url + "/v1", api_key="x", max_retries=0))
        kw: dict[str, Any] = {"model": "up", "messages": ASK, "tools": TOOLS, "tool_choice": "required"}
        r = client.chat.completions.create(**kw)
        message = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and message.content == "Checking. "
        assert message.tool_calls and message.tool_calls[0].id == "call_up0"
        assert message.tool_calls[0].function.arguments == '{"zone": "UTC"}'
        content, calls, finish = _assemble(client.chat.completions.create(**kw, stream=True))
        assert (content, finish) == ("Checking. ", "tool_calls")
        assert calls[0]["id"] == "call_up0" and calls[0]["arguments"] == '{"zone": "UTC"}'
    sent = engine.seen[0]
    assert sent.grammar is None and [t["function"]["name"] for t in sent.tools] == ["get_weather", "get_time"]
    assert sent.passthrough["tool_choice"] == "required"


# -- serving reads the model's own markup ------------------------------------------------------------------------
SAID = 'Let me check. <tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'


class Writer(Upstream):
    """A local engine writing a Hermes call as text, three characters an event, each with its logprob."""

    def __init__(self) -> None:
        super().__init__()
        self.info = EngineInfo(context_length=4096)

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        self.seen.append(req)
        pieces = [SAID[i:i + 3] for i in range(0, len(SAID), 3)]
        for p in pieces:
            lp = (TokenLogprob(p, -0.5, tuple(p.encode())),) if req.logprobs is not None else ()
            yield GenerationEvent(text=p, logprobs=lp)
        yield GenerationEvent(finish_reason="stop", usage=Usage(5, len(pieces)))


def test_calls_are_read_out_of_the_models_text(closing: contextlib.ExitStack, tmp_path: Path, tiny_gguf: Path) -> None:
    from tests.server.inprocess import serve

    engine = Writer()
    entry = tiny_entry("writer", tiny_gguf, ["general"], chat_template="chatml")
    with serve(tmp_path / "home", [entry], lambda _: engine) as url:
        client = closing.enter_context(OpenAI(base_url=url + "/v1", api_key="x", max_retries=0))
        kw: dict[str, Any] = {"model": "writer", "messages": ASK, "tools": TOOLS, "logprobs": True}
        r = client.chat.completions.create(**kw)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and (choice.message.content or "").strip() == "Let me check."
        assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_time"
        assert json.loads(choice.message.tool_calls[0].function.arguments) == {"zone": "UTC"}
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert "".join(e.token for e in choice.logprobs.content) == SAID  # one per token, markup's included

        contents: list[str] = []
        entries = 0
        calls: dict[tuple[int, int], str] = {}
        finishes: dict[int, str] = {}
        for chunk in client.chat.completions.create(**kw, stream=True, n=2):
            for ch in chunk.choices:
                if ch.delta.content:
                    contents.append(ch.delta.content)
                for d in ch.delta.tool_calls or []:
                    calls[ch.index, d.index] = calls.get((ch.index, d.index), "") + (d.function.arguments or "")
                entries += len(ch.logprobs.content or []) if ch.logprobs else 0
                if ch.finish_reason:
                    finishes[ch.index] = ch.finish_reason
        assert not any("<" in c or "{" in c for c in contents)  # markup never reaches content
        assert "".join(contents).replace(" ", "") == "Letmecheck." * 2
        assert {k: json.loads(v) for k, v in calls.items()} == {(0, 0): {"zone": "UTC"}, (1, 0): {"zone": "UTC"}}
        assert finishes == {0: "tool_calls", 1: "tool_calls"} and entries == 2 * ((len(SAID) + 2) // 3)
    sent = engine.seen[0]
    assert sent.grammar and sent.grammar_triggers == ("<tool_call>",)  # auto: a lazy grammar
