"""The Chainlit handlers, called with Chainlit's own Message/Text/ChatSettings objects; only the emitter
(the websocket edge) is replaced by one that records what would have been sent to the browser."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import chainlit as cl
import httpx
import pytest
from chainlit.context import ChainlitContext, context_var
from chainlit.emitter import BaseChainlitEmitter
from chainlit.session import HTTPSession

from lokal.rag import chat_app
from tests.rag.helpers import FakeOpenAI, Ingested, copy_collection
from tests.support.server import free_port

T = TypeVar("T")


class RecordingEmitter(BaseChainlitEmitter):
    def __init__(self, session: HTTPSession) -> None:
        super().__init__(session)
        self.events: list[tuple[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        self.elements: list[dict[str, Any]] = []
        self.chat_settings: dict[str, Any] | None = None

    async def emit(self, event: str, data: Any) -> None:
        self.events.append((event, data))

    async def send_step(self, step_dict: Any) -> None:
        self.steps.append(dict(step_dict))

    async def update_step(self, step_dict: Any) -> None:
        self.steps.append(dict(step_dict))

    async def stream_start(self, step_dict: Any) -> None:
        self.tokens.append(step_dict["output"])

    async def send_token(
        self, id: str, token: str, is_sequence: bool = False, is_input: bool = False
    ) -> None:
        self.tokens.append(token)

    async def send_element(self, element_dict: Any) -> None:
        self.elements.append(dict(element_dict))

    def set_chat_settings(self, settings: dict[str, Any]) -> None:  # type: ignore[override]
        self.chat_settings = settings


class Browser:
    """One chat session: every handler call runs inside the same Chainlit context."""

    def __init__(self) -> None:
        self.session = HTTPSession(
            id=str(uuid.uuid4()), thread_id=str(uuid.uuid4()), token=None, user=None, client_type="webapp"
        )
        self.emitter = RecordingEmitter(self.session)
        # one event loop for the session, as in Chainlit: the session's HTTP client lives on it
        self.loop = asyncio.new_event_loop()

    def run(self, handler: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            context_var.set(ChainlitContext(self.session, self.emitter))
            return await handler()

        return self.loop.run_until_complete(main())

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def chat_env(
    ingested: Ingested, home: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    copy_collection(ingested, home)
    monkeypatch.setenv("LOKAL_CHAT_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("LOKAL_CHAT_HOME", str(home))
    monkeypatch.setenv("LOKAL_CHAT_COLLECTION", "docs")
    monkeypatch.setattr(chat_app, "_retrievers", None)
    yield home


def test_start_offers_models_and_collections(chat_env: Path, browser: Browser) -> None:
    browser.run(chat_app.on_chat_start)
    assert browser.emitter.chat_settings == {
        "model": "fake-chat",
        "collection": "docs",
        "mode": "hybrid",
        "k": 4,
    }
    (widgets,) = [data for event, data in browser.emitter.events if event == "chat_settings"]
    choices = {w["id"]: [i["value"] for i in w.get("items", [])] for w in widgets}
    assert choices["model"] == ["fake-chat"]  # the embedding model is not a chat choice
    assert choices["collection"] == ["docs"]
    assert choices["mode"] == ["bm25", "dense", "hybrid"]
    assert "Asking **docs** with **fake-chat**" in browser.emitter.steps[-1]["output"]


def test_message_streams_a_cited_answer_with_source_elements(
    chat_env: Path, fake_openai: FakeOpenAI, browser: Browser
) -> None:
    browser.run(chat_app.on_chat_start)
    browser.run(lambda: chat_app.on_settings_update({"k": 2}))
    answer = browser.run(
        lambda: chat_app.on_message(cl.Message(content="How often must the turbine be inspected?"))
    )

    assert answer is not None and answer.cited == [1]
    assert len(browser.emitter.tokens) > 3 and "".join(browser.emitter.tokens) == answer.text  # streamed
    final = browser.emitter.steps[-1]["output"]
    assert final.startswith(answer.text) and "source 1: manual.pdf, page 1" in final
    first = browser.emitter.elements[0]
    assert (first["name"], first["display"], first["type"]) == ("source 1", "side", "text")
    assert len(browser.emitter.elements) == len(answer.sources) <= 2  # k=2 from the settings update
    assert fake_openai.requests[-1]["model"] == "fake-chat"
    browser.run(chat_app.on_chat_end)  # closes the session's HTTP client


def test_message_refusal_and_errors_are_shown_in_the_chat(
    chat_env: Path, fake_openai: FakeOpenAI, browser: Browser
) -> None:
    browser.run(chat_app.on_chat_start)
    refused = browser.run(lambda: chat_app.on_message(cl.Message(content="What is the capital of France?")))
    assert refused is not None and refused.refused
    assert "nothing relevant" in browser.emitter.steps[-1]["output"] and fake_openai.requests == []
    assert browser.emitter.elements == []

    browser.run(lambda: chat_app.on_settings_update({"collection": "missing"}))
    assert browser.run(lambda: chat_app.on_message(cl.Message(content="anything"))) is None
    assert browser.emitter.steps[-1]["output"].startswith("**Error:** collection 'missing' does not exist")


def test_lokal_chat_launches_the_chainlit_server(chat_env: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LOKAL_HOME": str(chat_env)}
    env.pop("CHAINLIT_APP_ROOT", None)  # `lokal chat` picks LOKAL_HOME/chat itself
    cmd = [sys.executable, "-m", "lokal", "chat", "--port", str(port), "--no-open", "-c", "docs"]
    log = (tmp_path / "chat.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert page is not None, (tmp_path / "chat.log").read_text(errors="replace")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert (chat_env / "chat" / ".chainlit").is_dir()  # Chainlit's files went to LOKAL_HOME/chat
    finally:
        proc.send_signal(signal.SIGTERM)  # `lokal chat` forwards it to the Chainlit child
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    time.sleep(1.0)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)  # the UI stopped with its launcher
