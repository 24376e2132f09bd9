"""End to end against a real `lokal serve` (aliases "tiny" [general, summarize, fast] and "tiny-coder"
[code, refactor], both the tiny random-weight GGUF): the pipeline over the official openai client, and
model="auto" served by lokal itself."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from lokal.embeddings.onnx import ONNX_NAME
from lokal.router.engine import IntentEngine
from lokal.router.factory import build_router
from lokal.router.pipeline import Pipeline
from lokal.router.trace import read_trace

CODE_TASK = "Write a Python function that merges two sorted lists"


@pytest.fixture(scope="module")
def server(lokal_server: Any, onnx_dir: Path) -> Any:
    # Give the server the session's exported MiniLM so its first "auto" request does not export its own.
    target = Path(lokal_server.home) / "router" / ONNX_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(onnx_dir / ONNX_NAME)
    return lokal_server


def test_pipeline_against_lokal_with_the_default_catalog(
    server: Any, tmp_path: Path, intent_engine: IntentEngine
) -> None:
    trace = tmp_path / "trace.jsonl"
    router = build_router(home=tmp_path, base_url=server.base_url, trace_path=trace, intents=intent_engine)
    cat = router.catalog
    assert {"tiny", "tiny-coder"} <= set(cat.models) and "all-minilm-l6-v2" not in cat.models
    assert cat.models["tiny-coder"].capabilities == ["code", "refactor"]
    # The tiny model writes noise, so the plan is unparseable and the whole task becomes the only step.
    res = Pipeline(router, max_steps=3, params={"max_tokens": 8}).run_all(CODE_TASK)
    router.close()
    assert res.plan is not None and res.plan.model == "tiny"
    assert [o.model for o in res.outputs] == ["tiny-coder"] * len(res.outputs)
    assert res.refine is not None and res.refine.model == "tiny"
    events = read_trace(trace)
    assert [e["kind"] for e in events][0] == "plan" and events[-1]["kind"] == "refine"
    assert all(e["completion_tokens"] > 0 and e["prompt_tokens"] > 0 for e in events)  # real usage from lokal
    assert all(e["error"] is None for e in events)


def test_model_auto_is_routed_by_the_server(closing: contextlib.ExitStack, server: Any) -> None:
    client = closing.enter_context(
        openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
    )
    assert "auto" in [m.id for m in client.models.list().data]
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": CODE_TASK}], max_tokens=8, temperature=0
    )
    resp = raw.parse()
    assert raw.headers["x-lokal-routed-model"] == "tiny-coder"
    assert raw.headers["x-lokal-intent"] == "code"
    info = (resp.model_extra or {})["lokal_router"]
    assert info["model"] == "tiny-coder" and info["router"] == "auto" and resp.model == "tiny-coder"
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Summarize: the meeting went well."}],
            max_tokens=8,
            stream=True,
        )
    )
    assert chunks and any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert {c.model for c in chunks} == {"tiny"}  # the alias that answered, as in the whole answer
    assert all(c.usage is None for c in chunks)  # lokal asked its engine for usage (the trace); the client did not
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # token by token
    files = sorted((Path(server.home) / "traces").glob("router-*.jsonl"))
    events = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    ids = {e["trace_id"] for e in events}
    assert info["trace_id"] in ids
    assert events[-1]["model"] == "tiny" and events[-1]["intent"] == "summarize"  # the streamed one, at its end
    status = httpx.get(server.url + "/lokal/router", timeout=30).json()
    assert status["names"][0] == "auto" and status["encoder"] == "onnxruntime"
    assert {"tiny", "tiny-coder"} <= set(status["models"]) and status["cache"]["misses"] >= 1


def test_unknown_router_names_are_plain_model_errors(server: Any) -> None:
    r = httpx.post(
        server.base_url + "/chat/completions",
        timeout=60,
        json={"model": "auto-nope", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] in ("model_not_found", None)


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
FORCED = {"type": "function", "function": {"name": "weather"}}


def test_model_auto_passes_tools_through_to_a_local_model(closing: contextlib.ExitStack, server: Any) -> None:
    client = closing.enter_context(
        openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
    )
    for _ in range(2):  # the second identical request must not be a text-only cache hit
        resp = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Summarize the weather in Paris."}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice=FORCED,  # type: ignore[arg-type]
            max_tokens=160,
            temperature=0,
        )
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        call = choice.message.tool_calls[0]
        assert call.function.name == "weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")  # type: ignore[union-attr]


def test_a_remote_router_candidate_forwards_tools_and_returns_the_calls(server: Any) -> None:
    """The router's HTTP backend against a real OpenAI-compatible server (lokal itself, on the tiny model):
    tools and tool_choice go out, and the calls come back in the routed answer under the catalog alias."""
    import asyncio

    from lokal.router.backends import ChatCall, Target
    from lokal.router.catalog import Endpoint
    from lokal.router.upstream import HttpBackend

    params = {"tools": [WEATHER], "tool_choice": FORCED, "max_tokens": 160, "temperature": 0, "top_k": 1}
    target = Target("remote-tiny", "tiny", Endpoint(base_url=server.base_url), 120)

    async def call() -> Any:
        http = HttpBackend()
        try:
            return await http.complete(target, ChatCall([{"role": "user", "content": "Weather in Oslo?"}], params))
        finally:
            await http.aclose()

    answer = asyncio.run(call())
    body = answer.completion
    calls = body.choices[0].message.tool_calls
    assert body.model == "remote-tiny" and body.choices[0].finish_reason == "tool_calls"
    assert answer.model_id == "tiny" and answer.completion_tokens > 0
    assert calls and calls[0].function.name == "weather"
    assert json.loads(calls[0].function.arguments)["city"] in ("Paris", "Oslo")
