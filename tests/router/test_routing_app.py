"""model="auto" through the server's chat route, in process over ASGI on echo models: the intent picks the
model, the echo shows it was that model's serving path that answered, and a model that cannot load falls back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lokal.embeddings.onnx import ONNX_NAME
from lokal.router.server import Routing
from lokal.server.features import OpenAIApi
from tests.support.echo import echo_app, echo_entry, echo_settings

T = TypeVar("T")
CODE = "Write a Python function that reverses a linked list"
CHAT = "Suggest a name for my bakery"


def run(
    home: Path, onnx_dir: Path, scenario: Callable[[httpx.AsyncClient], Coroutine[Any, Any, T]], coder_error: str = ""
) -> T:
    """A server of the OpenAI API and routing over echo models "tiny" (general) and "tiny-coder" (code)."""
    router_dir = home / "router"
    router_dir.mkdir(parents=True, exist_ok=True)
    (router_dir / ONNX_NAME).symlink_to(onnx_dir / ONNX_NAME)  # the session's export: no export per test
    entries = [
        echo_entry(home, "tiny", capabilities=["general", "summarize", "fast"]),
        echo_entry(home, "tiny-coder", capabilities=["code", "refactor"], load_error=coder_error),
    ]

    async def main() -> T:
        async with echo_app(echo_settings(home, entries), [OpenAIApi(), Routing()]) as (client, _):
            return await scenario(client)

    return asyncio.run(main())


def ask(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


def test_auto_sends_each_intent_to_its_model(tmp_path: Path, onnx_dir: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[tuple[str, str, str]]:
        out = []
        for prompt in (CODE, CHAT):
            r = await client.post("/v1/chat/completions", json=ask(prompt))
            assert r.status_code == 200, r.text
            data = r.json()
            out.append((r.headers["x-lokal-routed-model"], data["model"], data["choices"][0]["message"]["content"]))
        return out

    (code_model, code_name, code_text), (chat_model, _, chat_text) = run(tmp_path, onnx_dir, scenario)
    assert (code_model, chat_model) == ("tiny-coder", "tiny")
    assert code_text == CODE and chat_text == CHAT  # the echo: the client's own request reached the model
    assert "tiny-coder" in code_name


def test_a_routed_stream_arrives_token_by_token(tmp_path: Path, onnx_dir: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[str, list[str]]:
        r = await client.post("/v1/chat/completions", json=ask(CODE, stream=True))
        assert r.status_code == 200, r.text
        frames = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ") and ln != "data: [DONE]"]
        pieces = [c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, frames) if c["choices"]]
        return r.headers["x-lokal-routed-model"], [p for p in pieces if p]

    model, pieces = run(tmp_path, onnx_dir, scenario)
    assert model == "tiny-coder"
    assert pieces == ["Write ", "a ", "Python ", "function ", "that ", "reverses ", "a ", "linked ", "list"]


def test_a_model_that_cannot_load_falls_back_to_the_next(tmp_path: Path, onnx_dir: Path) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[int, dict[str, str], str]:
        r = await client.post("/v1/chat/completions", json=ask(CODE))
        return r.status_code, dict(r.headers), r.text

    status, headers, text = run(tmp_path, onnx_dir, scenario, coder_error="weights are corrupt")
    assert status == 200, text
    assert headers["x-lokal-routed-model"] == "tiny"
    assert json.loads(text)["choices"][0]["message"]["content"] == CODE
