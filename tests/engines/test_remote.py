"""The remote engine: lokal in front of another OpenAI-compatible server (a second lokal, and a scripted
upstream that streams tool calls and logprobs the way OpenAI does)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import (
    ChatMessage,
    GenerationEvent,
    GenerationRequest,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from lokal.engines.remote import RemoteEngine
from lokal.errors import InvalidRequest, UpstreamError
from tests.support.models import write_catalog
from tests.support.server import LokalServer, free_port, run_app


def test_remote_variant_proxies_to_the_upstream(lokal_server: LokalServer, tmp_path: Path, closing: ExitStack) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    write_catalog(
        tmp_path,
        [
            {
                "alias": "far",
                "variants": [
                    {
                        "id": "far-remote:1",
                        "engine": "remote",
                        "base_url": lokal_server.base_url,
                        "upstream_model": "tiny",
                    }
                ],
            },
            {"alias": "gone", "variants": [{"id": "gone-remote:1", "engine": "remote", "base_url": dead}]},
        ],
    )
    with LokalServer(tmp_path, args=["--model", "far"]) as front:
        msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
        direct = closing.enter_context(OpenAI(base_url=lokal_server.base_url, api_key="x")).chat.completions.create(
            model="tiny", messages=msgs, max_tokens=9, temperature=0
        )
        client = closing.enter_context(OpenAI(base_url=front.base_url, api_key="x", max_retries=0))
        via = client.chat.completions.create(model="far", messages=msgs, max_tokens=9, temperature=0)
        assert via.choices[0].message.content == direct.choices[0].message.content
        assert via.usage is not None and via.usage.completion_tokens == 9
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="far",
                messages=msgs,
                max_tokens=9,
                temperature=0,
                stream=True,
            )
            if c.choices
        )
        assert streamed == direct.choices[0].message.content
        assert "far" in [m.id for m in client.models.list().data]
        r = httpx.post(
            front.base_url + "/chat/completions",
            timeout=30,
            json={"model": "gone", "messages": msgs, "max_tokens": 3},
        )
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "upstream_error"


# -- a scripted upstream: what a real OpenAI-compatible server streams for tools and logprobs ------------------
TOOL_CHUNKS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}},
]  # fmt: skip
LOGPROB_CHUNKS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [
        {"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                          {"token": "Hey", "logprob": -1.5, "bytes": None}]}]}}]},
    {"choices": [{"index": 0, "delta": {"content": "!"}, "logprobs": {"content": [
        {"token": "!", "logprob": -0.5, "bytes": [33], "top_logprobs": []}]}, "finish_reason": "content_filter"}]},
]  # fmt: skip
COMPLETION_CHUNKS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "text": "ab", "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2],
                  "top_logprobs": [{"a": -0.1, "x": -2.0}, {"b": -0.2}], "text_offset": [0, 1]}}]},
    {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
]  # fmt: skip


class Upstream:
    """A Starlette app on a real uvicorn at 127.0.0.1 that records each request body and streams a script."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.script: Sequence[dict[str, Any] | str] = []
        self.base_url = ""  # known once running

    async def _handle(self, request: Request) -> StreamingResponse:
        self.bodies.append(await request.json())
        script = list(self.script)

        async def frames() -> AsyncIterator[bytes]:
            for item in script:
                yield f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def _models(self, request: Request) -> JSONResponse:  # what the pool's health checks ask
        return JSONResponse({"object": "list", "data": [{"id": "up", "object": "model"}]})

    async def _embeddings(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        vectors = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5]} for i, t in enumerate(body["input"])
        ]
        return JSONResponse({"object": "list", "data": vectors, "model": body["model"]})

    @contextmanager
    def running(self) -> Iterator[Upstream]:
        app = Starlette(
            routes=[Route(p, self._handle, methods=["POST"]) for p in ("/v1/chat/completions", "/v1/completions")]
            + [Route("/v1/models", self._models), Route("/v1/embeddings", self._embeddings, methods=["POST"])]
        )
        with run_app(app) as url:
            self.base_url = f"{url}/v1"
            yield self


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream().running() as up:
        yield up


@pytest.fixture
def remote(upstream: Upstream) -> Iterator[RemoteEngine]:
    upstream.bodies.clear()
    variant = Variant(id="far:1", engine="remote", base_url=upstream.base_url, upstream_model="up")
    spec = ModelSpec(alias="far", context_length=4096, variants=[variant])
    engine = RemoteEngine(timeout=10)
    engine.load(spec, spec.variants[0], None)
    yield engine
    engine.unload()


def _run(engine: RemoteEngine, req: GenerationRequest) -> list[GenerationEvent]:
    """The engine's own async API, on a loop of the test's own (the pool opens on it and closes with it)."""

    async def main() -> list[GenerationEvent]:
        await engine.start()
        try:
            return [event async for event in engine.agenerate(req)]
        finally:
            await engine.aclose()

    return asyncio.run(main())


def test_the_sync_face_runs_the_engine_on_a_loop_of_its_own(upstream: Upstream, remote: RemoteEngine) -> None:
    """What `lokal run` in-process and a worker thread call: `generate` with a cancel flag."""
    upstream.script = LOGPROB_CHUNKS
    req = GenerationRequest(messages=(ChatMessage("user", "hi"),))
    assert [e.text for e in remote.generate(req, threading.Event())] == ["Hi", "!", ""]
    cancel = threading.Event()
    events = remote.generate(req, cancel)
    assert next(events).text == "Hi"
    cancel.set()
    assert [e.finish_reason for e in events] == ["cancelled"]
    remote.unload()  # stops the engine's own loop thread
    assert not [t for t in threading.enumerate() if t.name == "lokal-remote-far"]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_every_sampling_field_and_the_clients_own_fields_are_forwarded(
    upstream: Upstream, remote: RemoteEngine
) -> None:
    upstream.script = TOOL_CHUNKS
    messages = (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_0", "get_weather", '{"city": "Bergen"}'),)),
        ChatMessage("tool", "rain", tool_call_id="call_0", name="get_weather"),
    )
    req = GenerationRequest(
        messages=messages, max_tokens=20, temperature=0.3, top_p=0.9, seed=7, stop=("END",),
        top_k=5, min_p=0.1, repeat_penalty=1.2, presence_penalty=0.5, frequency_penalty=-0.5,
        logit_bias={42: 3.0, 7: -100.0}, logprobs=3, tools=TOOLS, ignore_eos=True,
        grammar='root ::= "x"',  # built from the response_format below, which goes instead
        passthrough={"tool_choice": "required", "parallel_tool_calls": False, "stream": False,  # lokal streams
                     "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
    )  # fmt: skip
    _run(remote, req)
    body = upstream.bodies[-1]
    assert body == {
        "model": "up", "temperature": 0.3, "top_p": 0.9, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": 20, "stop": ["END"], "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "logit_bias": {"42": 3.0, "7": -100.0}, "top_k": 5, "min_p": 0.1, "ignore_eos": True,
        "repeat_penalty": 1.2, "repetition_penalty": 1.2, "logprobs": True, "top_logprobs": 3, "tools": TOOLS,
        "tool_choice": "required", "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'}}]},
            {"role": "tool", "content": "rain", "tool_call_id": "call_0", "name": "get_weather"},
        ],
    }  # fmt: skip
    # Fields at their defaults stay home: an upstream that does not know an extension never sees it.
    _run(remote, GenerationRequest(messages=messages[:1], temperature=0.5))
    plain = upstream.bodies[-1]
    assert set(plain) == {"model", "temperature", "top_p", "stream", "stream_options", "messages"}


def test_streamed_tool_calls_come_back_as_deltas(upstream: Upstream, remote: RemoteEngine) -> None:
    upstream.script = TOOL_CHUNKS
    events = _run(remote, GenerationRequest(messages=(ChatMessage("user", "weather?"),), tools=TOOLS))
    calls = [d for e in events for d in e.tool_calls]
    assert calls == [
        ToolCallDelta(0, "call_a", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city": '),
        ToolCallDelta(0, None, None, '"Oslo"}'),
        ToolCallDelta(1, "call_b", "get_time", "{}"),
    ]
    assert all(e.text == "" for e in events)
    assert (events[-1].finish_reason, events[-1].usage) == ("tool_calls", Usage(11, 7))


def test_chat_logprobs_are_read_and_unknown_finish_reasons_become_stop(
    upstream: Upstream, remote: RemoteEngine
) -> None:
    upstream.script = LOGPROB_CHUNKS
    events = _run(remote, GenerationRequest(messages=(ChatMessage("user", "hi"),), logprobs=2))
    assert [e.text for e in events[:-1]] == ["Hi", "!"]
    assert events[0].logprobs == (
        TokenLogprob(
            "Hi", -0.25, (72, 105), (TopLogprob("Hi", -0.25, (72, 105)), TopLogprob("Hey", -1.5, (72, 101, 121)))
        ),
    )
    assert events[1].logprobs == (TokenLogprob("!", -0.5, (33,), ()),)
    assert events[-1].finish_reason == "stop"


def test_completion_logprobs_are_read_from_the_parallel_arrays(upstream: Upstream, remote: RemoteEngine) -> None:
    upstream.script = COMPLETION_CHUNKS
    events = _run(remote, GenerationRequest(prompt="x", logprobs=1))
    assert upstream.bodies[-1]["logprobs"] == 1 and "top_logprobs" not in upstream.bodies[-1]
    assert events[0].logprobs == (
        TokenLogprob("a", -0.1, (97,), (TopLogprob("a", -0.1, (97,)), TopLogprob("x", -2.0, (120,)))),
        TokenLogprob("b", -0.2, (98,), (TopLogprob("b", -0.2, (98,)),)),
    )
    assert events[-1].finish_reason == "length"


def test_a_grammar_the_api_has_no_field_for_is_a_400(upstream: Upstream, remote: RemoteEngine) -> None:
    with pytest.raises(InvalidRequest) as err:
        _run(remote, GenerationRequest(messages=(ChatMessage("user", "x"),), grammar='root ::= "a"'))
    assert err.value.param == "grammar" and str(err.value).startswith("far ")
    assert upstream.bodies == []  # refused before anything was sent


def test_an_error_frame_mid_stream_is_an_upstream_error(upstream: Upstream, remote: RemoteEngine) -> None:
    upstream.script = [LOGPROB_CHUNKS[0], {"error": {"message": "the GPU fell over", "type": "server_error"}}]
    with pytest.raises(UpstreamError, match="the GPU fell over"):
        _run(remote, GenerationRequest(messages=(ChatMessage("user", "x"),)))
    upstream.script = ["{not json"]
    with pytest.raises(UpstreamError, match="not JSON"):
        _run(remote, GenerationRequest(messages=(ChatMessage("user", "x"),)))


def test_tool_calls_from_an_upstream_reach_the_openai_client(
    upstream: Upstream, tmp_path: Path, closing: ExitStack
) -> None:
    """Through a real lokal server: the upstream's calls come out whole, and streamed as the same deltas."""
    tools: list[Any] = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("get_weather", "get_time")
    ]
    upstream.script = TOOL_CHUNKS
    entry = {"id": "far-remote:1", "engine": "remote", "base_url": upstream.base_url, "upstream_model": "up"}
    write_catalog(tmp_path, [{"alias": "far", "variants": [entry]}])
    msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": "weather and time?"}]
    with LokalServer(tmp_path, args=["--model", "far"]) as front:
        client = closing.enter_context(OpenAI(base_url=front.base_url, api_key="x", max_retries=0))
        whole = client.chat.completions.create(model="far", messages=msgs, tools=tools, tool_choice="required")
        assert upstream.bodies[-1]["tool_choice"] == "required" and upstream.bodies[-1]["tools"] == tools
        calls = whole.choices[0].message.tool_calls or []
        assert [(c.id, c.function.name, c.function.arguments) for c in calls if c.type == "function"] == [
            ("call_a", "get_weather", '{"city": "Oslo"}'),
            ("call_b", "get_time", "{}"),
        ]
        assert whole.choices[0].finish_reason == "tool_calls"
        assembled: dict[int, list[str]] = {}
        finish = None
        for chunk in client.chat.completions.create(model="far", messages=msgs, tools=tools, stream=True):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                assert not choice.delta.content
                for d in choice.delta.tool_calls or ():
                    part = assembled.setdefault(d.index, [d.id or "", ""])
                    part[1] += (d.function.arguments or "") if d.function else ""
        assert assembled == {0: ["call_a", '{"city": "Oslo"}'], 1: ["call_b", "{}"]}
        assert finish == "tool_calls"


def test_a_failure_mid_stream_ends_the_clients_stream_with_an_error_frame_and_embeddings_pass(
    upstream: Upstream, tmp_path: Path, closing: ExitStack
) -> None:
    """Through a real lokal server: the first chunk went out, then the upstream failed: one OpenAI-shaped error
    frame, no [DONE]. And an embeddings upstream answers through the same engine."""
    upstream.script = [LOGPROB_CHUNKS[0], {"error": {"message": "the GPU fell over", "type": "server_error"}}]
    far = {"id": "far-remote:1", "engine": "remote", "base_url": upstream.base_url, "upstream_model": "up"}
    emb = {"id": "far-emb:1", "engine": "remote", "base_url": upstream.base_url, "upstream_model": "vec"}
    write_catalog(
        tmp_path,
        [{"alias": "far", "variants": [far]}, {"alias": "far-emb", "task": "embeddings", "variants": [emb]}],
    )
    with LokalServer(tmp_path, args=["--model", "far"]) as front:
        body = {"model": "far", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream("POST", front.base_url + "/chat/completions", json=body, timeout=30) as resp:
            assert resp.status_code == 200
            lines = [line for line in resp.iter_lines() if line]
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hi"
        frame = json.loads(lines[-1].removeprefix("data: "))
        assert frame["error"]["code"] == "upstream_error" and "the GPU fell over" in frame["error"]["message"]
        assert "data: [DONE]" not in lines
        client = closing.enter_context(OpenAI(base_url=front.base_url, api_key="x", max_retries=0))
        out = client.embeddings.create(model="far-emb", input=["ab", "abcd"])
        assert [d.embedding for d in out.data] == [[2.0, 0.5], [4.0, 0.5]]
        assert upstream.bodies[-1] == {"model": "vec", "input": ["ab", "abcd"]}


def test_lokal_run_in_process_streams_from_an_upstream(upstream: Upstream, tmp_path: Path) -> None:
    """No server running: `lokal run` loads the async engine in its own process, on a loop of the engine's."""
    upstream.script = LOGPROB_CHUNKS
    entry = {"id": "far-remote:1", "engine": "remote", "base_url": upstream.base_url, "upstream_model": "up"}
    write_catalog(tmp_path, [{"alias": "far", "variants": [entry]}])
    env = {**os.environ, "LOKAL_HOME": str(tmp_path), "LOKAL_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lokal", "run", "far", "--prompt", "hi", "--port", str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hi!"
    assert upstream.bodies[-1]["messages"] == [{"role": "user", "content": "hi"}]
