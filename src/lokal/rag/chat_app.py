"""The Chainlit chat over a collection (`lokal chat` runs `chainlit run` on this file).

The handlers are plain async functions registered at the bottom, so tests call them directly with
Chainlit's own objects and a recording emitter, without a browser. Defaults come from LOKAL_CHAT_*
environment variables, which `lokal chat` sets from its options.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from lokal.config import get_settings
from lokal.errors import LokalError
from lokal.rag.answer import (
    DEFAULT_MIN_SCORE,
    Answer,
    ask,
    citation_label,
    default_base_url,
    list_models,
    make_client,
)
from lokal.rag.index import DEFAULT_COLLECTION, list_collections
from lokal.rag.retrieve import MODES, Mode, RetrieverCache

# Chainlit writes .chainlit/ and .files/ into its app root on import; keep them out of the user's cwd.
if "CHAINLIT_APP_ROOT" not in os.environ:
    _root = get_settings().home / "chat"
    _root.mkdir(parents=True, exist_ok=True)
    os.environ["CHAINLIT_APP_ROOT"] = str(_root)

import chainlit as cl  # noqa: E402  (must follow CHAINLIT_APP_ROOT)
from chainlit.input_widget import Select, Slider  # noqa: E402

AUTHOR = "lokal"


class ChatDefaults(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOKAL_CHAT_", extra="ignore")

    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    collection: str = DEFAULT_COLLECTION
    mode: Mode = "hybrid"
    k: int = 4
    min_score: float = DEFAULT_MIN_SCORE
    max_tokens: int = 512
    home: Path | None = None  # LOKAL_HOME unless set


_retrievers: RetrieverCache | None = None


def retrievers(home: Path | None = None) -> RetrieverCache:
    """One cache per process: every chat session shares the loaded collections and the embedder."""
    global _retrievers
    if _retrievers is None:
        _retrievers = RetrieverCache(home)
    return _retrievers


def _pick(values: list[str], wanted: str | None) -> str | None:
    if wanted in values:
        return wanted
    return values[0] if values else wanted


async def on_chat_start() -> None:
    """Offer the endpoint's models and the collections as settings; greet with what is selected."""
    defaults = ChatDefaults()
    client = make_client(defaults.base_url or default_base_url(), defaults.api_key)
    cl.user_session.set("client", client)
    notes: list[str] = []
    try:
        models = await list_models(client)
    except LokalError as exc:
        models = []
        notes.append(f"Model list unavailable: {exc.message}")
    home = defaults.home or retrievers().home
    collections = [c.name for c in await asyncio.to_thread(list_collections, home)]
    model = _pick(models, defaults.model)
    collection = _pick(collections, defaults.collection)
    settings = await cl.ChatSettings(
        [
            Select(id="model", label="Model", values=models or [model or ""], initial_value=model or ""),
            Select(
                id="collection",
                label="Collection",
                values=collections or [collection or DEFAULT_COLLECTION],
                initial_value=collection or DEFAULT_COLLECTION,
            ),
            Select(id="mode", label="Retrieval", values=list(MODES), initial_value=defaults.mode),
            Slider(id="k", label="Passages (top-k)", initial=defaults.k, min=1, max=10, step=1),
        ]
    ).send()
    cl.user_session.set("settings", settings)
    if not collections:
        notes.append("No collections yet: index documents with `lokal rag ingest PATH --collection NAME`.")
    greeting = f"Asking **{collection}** with **{model or 'the first model offered'}**."
    await cl.Message(content="\n\n".join([greeting, *notes]), author=AUTHOR).send()


async def on_settings_update(settings: dict[str, Any]) -> None:
    current = dict(cl.user_session.get("settings") or {})
    current.update(settings)
    cl.user_session.set("settings", current)


def source_elements(answer: Answer) -> list[cl.Text]:
    """Each passage given to the model, as a side element the user can open from the message."""
    cited = set(answer.cited)
    elements = []
    for n, hit in enumerate(answer.sources, start=1):
        title = f"**{citation_label(n, hit)}**{' (cited)' if n in cited else ''}"
        elements.append(
            cl.Text(name=f"source {n}", content=f"{title}\n\n`{hit.source}`\n\n{hit.text}", display="side")
        )
    return elements


def sources_footer(answer: Answer) -> str:
    if not answer.sources:
        return ""
    lines = [f"- source {n}: {hit.name}, {hit.location}" for n, hit in enumerate(answer.sources, start=1)]
    head = "Sources" if answer.cited else "Context given to the model (the answer cites none of it)"
    return f"\n\n**{head}**\n" + "\n".join(lines)


async def on_message(message: cl.Message) -> Answer | None:
    """Retrieve, stream the grounded answer token by token, then attach the passages as elements."""
    defaults = ChatDefaults()
    settings: dict[str, Any] = cl.user_session.get("settings") or {}
    client = cl.user_session.get("client") or make_client(
        defaults.base_url or default_base_url(), defaults.api_key
    )
    reply = cl.Message(content="", author=AUTHOR)
    try:
        collection = str(settings.get("collection") or defaults.collection)
        retriever = await asyncio.to_thread(retrievers(defaults.home).get, collection)
        mode: Mode = settings["mode"] if settings.get("mode") in MODES else defaults.mode
        answer = await ask(
            retriever,
            message.content,
            client=client,
            model=settings.get("model") or defaults.model,
            k=int(settings.get("k") or defaults.k),
            mode=mode,
            min_score=defaults.min_score,
            max_tokens=defaults.max_tokens,
            on_token=reply.stream_token,
        )
    except LokalError as exc:
        reply.content = f"**Error:** {exc.message}"
        await reply.send()
        return None
    if answer.refused:
        reply.content = answer.text
    else:
        reply.content = answer.text + sources_footer(answer)
        reply.elements = source_elements(answer)  # type: ignore[assignment]
    await reply.send()
    return answer


async def on_chat_end() -> None:
    client = cl.user_session.get("client")
    if client is not None:
        await client.close()


cl.on_chat_start(on_chat_start)
cl.on_settings_update(on_settings_update)
cl.on_message(on_message)
cl.on_chat_end(on_chat_end)
