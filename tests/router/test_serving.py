"""ServedRouter (the routing state the server keeps for model="auto") run by the executor: plan, backends,
cache, failure memory, trace."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lokal.catalog.spec import ModelSpec, Task, Variant
from lokal.errors import ModelNotFound, Overloaded
from lokal.protocol.outputs import ChatChoice, ChatCompletion, ChatMessage, Usage
from lokal.router.backends import Answer, ChatCall, Opened, Target
from lokal.router.engine import IntentEngine
from lokal.router.executor import Executor, RoutedRequest
from lokal.router.serving import ServedRouter, response_headers
from lokal.router.trace import TRACE_FIELDS
from tests.router.fakes import FakeOpenAI

CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list"}]
CHAT = [{"role": "user", "content": "Suggest a name for my bakery"}]


def _spec(alias: str, caps: list[str], task: Task = "chat-completion") -> ModelSpec:
    return ModelSpec(
        alias=alias,
        capabilities=caps,
        task=task,
        context_length=2048,
        variants=[Variant(id=f"{alias}-cpu:1", path="/dev/null")],
    )


LOCAL = [
    _spec("tiny", ["general", "summarize", "fast"]),
    _spec("tiny-coder", ["code", "refactor"]),
    _spec("all-minilm-l6-v2", ["embeddings"], task="embeddings"),
]


@pytest.fixture
def served(tmp_path: Path, intent_engine: IntentEngine) -> ServedRouter:
    loaded = {"tiny"}
    return ServedRouter.from_home(tmp_path, lambda: LOCAL, lambda: loaded, intents=intent_engine)


def test_default_catalog_comes_from_local_chat_models(served: ServedRouter) -> None:
    assert served.names() == ["auto"]
    assert served.is_router_model("auto") and not served.is_router_model("tiny")
    assert set(served.router.catalog.models) == {"tiny", "tiny-coder"}  # the embedder is not a chat model


def test_plan_gives_local_candidates_without_an_endpoint(served: ServedRouter) -> None:
    d = served.plan("auto", CODE)
    assert d.intent == "code" and d.method == "combined"
    assert d.primary.model == "tiny-coder" and d.primary.endpoint is None and d.primary.role == "primary"
    chat = served.plan("auto", CHAT)
    assert chat.primary.model == "tiny" and "loaded" in chat.reason
    with pytest.raises(ModelNotFound, match="not a router model"):
        served.plan("tiny", CHAT)
    headers = response_headers(d, "tiny-coder")
    assert headers["x-lokal-routed-model"] == "tiny-coder" and headers["x-lokal-trace-id"] == d.trace_id


def test_record_writes_a_daily_trace_under_home(served: ServedRouter, tmp_path: Path) -> None:
    d = served.plan("auto", CODE)
    served.router.record(d, "tiny-coder", 12.5, (9, 4), None, False, False, messages=CODE)
    served.router.record(d, None, 30.0, None, "tiny-coder: boom", True, False)
    files = list((tmp_path / "traces").glob("router-*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert all(set(x) == set(TRACE_FIELDS) for x in lines)
    assert lines[0]["model"] == "tiny-coder" and lines[0]["prompt_tokens"] == 9 and lines[0]["intent"] == "code"
    assert lines[1]["error"] == "tiny-coder: boom" and lines[1]["fallback_used"] is True


class BusyCoder:
    """An in-process backend whose "tiny-coder" queue is always full."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def complete(self, target: Target, call: ChatCall) -> Answer:
        self.calls.append(target.upstream_model)
        if target.upstream_model == "tiny-coder":
            raise Overloaded("queue full")
        text = f"<{target.upstream_model}>"
        body = ChatCompletion(
            id="x",
            created=0,
            model=target.model,
            choices=[ChatChoice(index=0, message=ChatMessage(content=text), finish_reason="stop")],
            usage=Usage.of(5, 2),
        )
        return Answer(body, text, 5, 2, f"{target.upstream_model}-cpu:1")

    async def stream(self, target: Target, call: ChatCall) -> Opened:
        raise AssertionError("not streamed here")


def test_local_models_are_served_in_process_and_fall_back_when_one_is_busy(
    tmp_path: Path, intent_engine: IntentEngine
) -> None:
    served = ServedRouter.from_home(tmp_path, lambda: LOCAL, set, intents=intent_engine)
    local = BusyCoder()
    ex = Executor(served.router, local=local)

    async def sleep(seconds: float) -> None:
        pass

    ex._sleep = sleep
    res = asyncio.run(ex.complete(RoutedRequest(CODE, {"temperature": 0})))
    assert res.model == "tiny" and res.fallback_used and res.content == "<tiny>"
    assert res.completion is not None and res.completion.model == "tiny" and res.model_id == "tiny-cpu:1"
    assert res.completion.lokal_router is not None and res.completion.lokal_router["fallback_used"] is True
    assert local.calls == ["tiny-coder", "tiny-coder", "tiny"]  # an overloaded queue is worth one retry
    again = asyncio.run(ex.complete(RoutedRequest(CODE, {"temperature": 0})))
    # tiny-coder was overloaded, not broken: no cooldown, so it is asked again before the cached fallback.
    assert again.cache_hit and again.model == "tiny"
    assert local.calls == ["tiny-coder", "tiny-coder", "tiny", "tiny-coder", "tiny-coder"]


def test_remote_candidates_presets_cache_and_failure_memory(
    tmp_path: Path, intent_engine: IntentEngine, fake_server: Callable[..., FakeOpenAI]
) -> None:
    remote = fake_server()
    (tmp_path / "router.yaml").write_text(
        json.dumps(
            {
                "endpoints": {"vllm": {"base_url": remote.base_url}},
                "models": {
                    "tiny": {"capabilities": ["general", "summarize"], "priority": 1},
                    "tiny-coder": {"capabilities": ["code"], "priority": 1, "fallbacks": ["qwen-32b"]},
                    "qwen-32b": {
                        "capabilities": ["general", "code", "reasoning"],
                        "priority": 3,
                        "tier": 2,
                        "endpoint": "vllm",
                        "upstream_model": "Qwen/Qwen2.5-32B",
                    },
                },
                "presets": {"auto-remote": {"models": ["qwen-32b"]}},
            }
        )
    )
    s = ServedRouter.from_home(tmp_path, lambda: LOCAL, set, intents=intent_engine)
    assert s.names() == ["auto", "auto-remote"]
    d = s.plan("auto-remote", CHAT)
    cand = d.primary
    assert cand.model == "qwen-32b" and cand.endpoint == remote.base_url

    async def calls() -> list[str]:
        ex = Executor(s.router)  # no in-process backend: only the remote model can answer
        try:
            out = []
            for temp in (0.0, 0.0, 0.9):
                res = await ex.complete(RoutedRequest(CHAT, {"temperature": temp}, router="auto-remote"))
                assert res.model == "qwen-32b" and res.model_id == "Qwen/Qwen2.5-32B"
                out.append(res.content + (" (cached)" if res.cache_hit else ""))
            return out
        finally:
            await ex.aclose()

    answer = f"[Qwen/Qwen2.5-32B] {CHAT[0]['content']}"
    assert asyncio.run(calls()) == [answer, answer + " (cached)", answer]  # sampled: never from the cache
    assert remote.models_called() == ["Qwen/Qwen2.5-32B"] * 2
    assert s.cache_stats["hits"] == 1
    code = s.plan("auto", CODE)
    assert [c.model for c in code.candidates][:2] == ["tiny-coder", "qwen-32b"]
    s.router.cooldowns.fail("tiny-coder", 30)
    assert s.plan("auto", CODE).primary.model == "qwen-32b"
    # Hot reload: a new preset appears in names() without restarting anything.
    data = json.loads((tmp_path / "router.yaml").read_text())
    data["presets"]["auto-local"] = {"local_only": True}
    (tmp_path / "router.yaml").write_text(json.dumps(data))
    st = (tmp_path / "router.yaml").stat()
    os.utime(tmp_path / "router.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert "auto-local" in s.names()
