"""The Chainlit handlers, called with Chainlit's own Message/Text/ChatSettings objects; only the emitter
(the websocket edge) is replaced by one that records what would have been sent to the browser."""

from __future__ import annotations

import asyncio
import os
import re
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
from tests.support.server import free_port, spawn_logged

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
        "min_score": 0.25,
        "temperature": 0.1,
        "max_tokens": 512,
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
    proc = spawn_logged(cmd, tmp_path / "chat.log", env)
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
        # Nothing from the internet: no Google Fonts, no jsdelivr stylesheet, no preconnects.
        assert "fonts.googleapis" not in page.text and "jsdelivr" not in page.text
        assert not re.search(r"<(link|script)\b[^>]*(href|src)=\"https?://", page.text)
        assert "<title>lokal chat</title>" in page.text  # lokal's config, not Chainlit's stock one
        settings = httpx.get(f"http://127.0.0.1:{port}/project/settings?language=en-US", timeout=10).json()
        assert settings["markdown"].count("# lokal chat") == 1  # lokal's readme
        uploads = settings["features"]["spontaneous_file_upload"]
        assert uploads["enabled"] is True and ".pdf" in uploads["accept"]["application/pdf"]
        assert settings["features"]["latex"] is False  # KaTeX would need jsdelivr
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


def test_two_turns_a_follow_up_uses_the_conversation(chat_env: Path, fake_openai: FakeOpenAI, browser: Browser) -> None:
    browser.run(chat_app.on_chat_start)
    first_q = "Which port does the server listen on by default?"
    first = browser.run(lambda: chat_app.on_message(cl.Message(content=first_q)))
    assert first is not None and not first.refused and "5273" in first.text

    follow_up = "How do I change it?"
    second = browser.run(lambda: chat_app.on_message(cl.Message(content=follow_up)))
    assert second is not None and not second.refused
    messages = fake_openai.requests[-1]["messages"]
    # The earlier turn goes as it was said; the passages only with the question they were found for.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == first_q and messages[2]["content"] == first.text
    assert messages[3]["content"].rstrip().endswith(f"Question: {follow_up}\nAnswer (cite passages like [1]):")
    # "it" found the port passage because the search carried the previous question.
    assert "LOKAL_PORT" in messages[3]["content"]
    assert any(h.name == "guide.md" for h in second.sources)

    async def history() -> Any:
        return cl.user_session.get("history")

    assert browser.run(history)[-1] == {"role": "assistant", "content": second.text}


def test_settings_reach_the_gate_and_the_model(chat_env: Path, fake_openai: FakeOpenAI, browser: Browser) -> None:
    browser.run(chat_app.on_chat_start)
    browser.run(lambda: chat_app.on_settings_update({"temperature": 0.7, "max_tokens": 64, "k": 2}))
    answer = browser.run(lambda: chat_app.on_message(cl.Message(content="How often must the turbine be inspected?")))
    assert answer is not None and not answer.refused
    sent = fake_openai.requests[-1]
    assert (sent["temperature"], sent["max_tokens"]) == (0.7, 64)

    browser.run(lambda: chat_app.on_settings_update({"min_score": 0.99}))
    strict = browser.run(lambda: chat_app.on_message(cl.Message(content="How often must the turbine be inspected?")))
    assert strict is not None and strict.refused and "< 0.99" in strict.text
    assert len(fake_openai.requests) == 1  # refused without asking the model


def test_uploaded_file_is_ingested_into_the_chat_collection_and_answers(
    chat_env: Path, fake_openai: FakeOpenAI, browser: Browser, tmp_path: Path
) -> None:
    upload = tmp_path / "upload-3f2a"  # Chainlit stores uploads under opaque names; the element keeps the real one
    upload.write_text("# Generator\n\nThe backup generator is tested every Tuesday at noon.\n", encoding="utf-8")
    browser.run(chat_app.on_chat_start)
    question = "When is the backup generator tested?"

    async def ask_with_file() -> Any:
        element = cl.File(name="ops.md", path=str(upload), mime="text/markdown")  # as Chainlit hands it over
        return await chat_app.on_message(cl.Message(content=question, elements=[element]))

    answer = browser.run(ask_with_file)

    outputs = [s["output"] for s in browser.emitter.steps]
    assert any(o.startswith("Added 1 file(s) to **docs**") for o in outputs)
    assert answer is not None and not answer.refused and answer.cited == [1]
    assert answer.sources[0].name == "ops.md" and "every Tuesday at noon" in answer.text
    assert (chat_env / "rag" / "uploads" / "docs" / "ops.md").is_file()

    # A file alone (no question) is ingested and acknowledged, and asks the model nothing.
    before = len(fake_openai.requests)
    other = tmp_path / "x"
    other.write_text("Spare fuses are kept in the red cabinet.", encoding="utf-8")

    async def file_only() -> Any:
        only = cl.File(name="fuses.txt", path=str(other), mime="text/plain")
        return await chat_app.on_message(cl.Message(content="", elements=[only]))

    assert browser.run(file_only) is None
    assert len(fake_openai.requests) == before
    assert browser.emitter.steps[-1]["output"].startswith("Added 1 file(s) to **docs**")


def test_sources_are_listed_in_the_order_cited(browser: Browser) -> None:
    from lokal.rag.answer import Answer
    from lokal.rag.retrieve import Hit

    hits = [Hit(i, i, f"/d/f{i}.md", f"line {i}", "t", (), 0.5, dense=0.5) for i in (1, 2, 3)]
    answer = Answer(question="q", text="b [3] a [1]", sources=hits, cited=[3, 1])
    footer = chat_app.sources_footer(answer)
    assert footer.index("source 3: f3.md") < footer.index("source 1: f1.md")
    assert "Also given to the model, not cited: source 2" in footer

    async def names() -> list[str]:
        return [e.name for e in chat_app.source_elements(answer)]

    assert browser.run(names) == ["source 3", "source 1", "source 2"]


def test_page_links_to_no_other_host() -> None:
    from lokal.rag.chat_setup import offline_html

    stock = (Path(cl.__file__).parent / "frontend" / "dist" / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" in stock and "cdn.jsdelivr.net" in stock  # what Chainlit ships
    page = offline_html(stock)
    assert "fonts.googleapis" not in page and "fonts.gstatic" not in page and "jsdelivr" not in page
    assert '<script type="module" crossorigin src="/assets/' in page  # its own assets stay
