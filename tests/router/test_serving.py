"""ServedRouter: the API the server uses for model="auto" (plan, call, cache, record, complete)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lokal.catalog.spec import ModelSpec, Task, Variant
from lokal.errors import ModelNotFound, Overloaded
from lokal.router.engine import IntentEngine
from lokal.router.serving import ServedRouter, response_headers
from lokal.router.trace import TRACE_FIELDS
from lokal.router.upstream import ChatResult
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
    served.record(
        d, "tiny-coder", 12.5, {"prompt_tokens": 9, "completion_tokens": 4}, None, False, False, messages=CODE
    )
    served.record(d, None, 30.0, None, "tiny-coder: boom", True, False)
    files = list((tmp_path / "traces").glob("router-*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert all(set(x) == set(TRACE_FIELDS) for x in lines)
    assert lines[0]["model"] == "tiny-coder" and lines[0]["prompt_tokens"] == 9 and lines[0]["intent"] == "code"
    assert lines[1]["error"] == "tiny-coder: boom" and lines[1]["fallback_used"] is True


def test_complete_serves_local_models_and_falls_back_when_one_is_busy(
    tmp_path: Path, intent_engine: IntentEngine
) -> None:
    calls: list[str] = []

    def local_call(
        model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], timeout: float
    ) -> ChatResult:
        calls.append(model)
        if model == "tiny-coder":
            raise Overloaded("queue full")
        return ChatResult(f"<{model}>", 5, 2, "stop")

    served = ServedRouter.from_home(tmp_path, lambda: LOCAL, set, intents=intent_engine, local_call=local_call)
    res = served.complete("auto", CODE, {"temperature": 0})
    assert res.model == "tiny" and res.fallback_used and res.content == "<tiny>"
    assert calls == ["tiny-coder", "tiny-coder", "tiny"]  # an overloaded queue is worth one retry
    again = served.complete("auto", CODE, {"temperature": 0})
    # tiny-coder was overloaded, not broken: no cooldown, so it is asked again before the cached fallback.
    assert again.cache_hit and again.model == "tiny"
    assert calls == ["tiny-coder", "tiny-coder", "tiny", "tiny-coder", "tiny-coder"]


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
    out = s.call(cand, CHAT, {"temperature": 0})
    assert out.content == f"[Qwen/Qwen2.5-32B] {CHAT[0]['content']}"
    s.cache_put(cand, CHAT, {"temperature": 0}, out.content, (out.prompt_tokens, out.completion_tokens))
    hit = s.cache_get(cand, CHAT, {"temperature": 0})
    assert hit is not None and hit.content == out.content
    assert s.cache_get(cand, CHAT, {"temperature": 0.9}) is None
    assert s.cache_stats["hits"] == 1
    code = s.plan("auto", CODE)
    assert [c.model for c in code.candidates][:2] == ["tiny-coder", "qwen-32b"]
    s.failed("tiny-coder", "boom")
    assert s.plan("auto", CODE).primary.model == "qwen-32b"
    # Hot reload: a new preset appears in names() without restarting anything.
    data = json.loads((tmp_path / "router.yaml").read_text())
    data["presets"]["auto-local"] = {"local_only": True}
    (tmp_path / "router.yaml").write_text(json.dumps(data))
    st = (tmp_path / "router.yaml").stat()
    os.utime(tmp_path / "router.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert "auto-local" in s.names()
