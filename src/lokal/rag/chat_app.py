"""The Chainlit chat over a collection (`lokal chat` runs `chainlit run` on this file).

A conversation: follow-ups are searched with the question before them and answered with the earlier turns
in the prompt; files attached to a message are ingested into the chat's collection; the settings panel
holds model, collection, retrieval mode, temperature, max tokens, top-k and the minimum score. The
relevance gate and the refusal are lokal.rag.gate's, as in `lokal rag ask` and the playground.

The handlers are plain async functions registered at the bottom, so tests call them directly with
Chainlit's own objects and a recording emitter, without a browser. Defaults come from LOKAL_CHAT_*
environment variables, which `lokal chat` sets from its options.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from lokal.config import env_value, get_settings, library_default
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
if env_value("CHAINLIT_APP_ROOT") is None:
    _root = get_settings().home / "chat"
    _root.mkdir(parents=True, exist_ok=True)
    library_default("CHAINLIT_APP_ROOT", str(_root))

import chainlit as cl  # noqa: E402  (must follow CHAINLIT_APP_ROOT)
import chainlit.server  # noqa: E402
from chainlit.input_widget import Select, Slider  # noqa: E402

from lokal.rag.chat_setup import install_offline_page  # noqa: E402

install_offline_page(chainlit.server)  # no Google Fonts, no jsdelivr: the page loads only from this server

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
    temperature: float = 0.1
    home: Path | None = None  # LOKAL_HOME unless set


# Turns of the conversation sent with each question: enough for follow-ups, bounded for a 4k context.
HISTORY_TURNS = 4


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


SYNTHETIC_NOTE = "**SYNTHETIC model** ({model}): random weights, its answers are noise."


async def synthetic_models(client: Any) -> set[str]:
    """Ids whose card says random weights: lokal's cards carry `lokal.synthetic`; other endpoints say nothing."""
    try:
        page = await client.models.list()
    except Exception:  # the model list is a label source here, not a requirement: no label, no failure
        return set()
    out = set()
    for card in page.data:
        facts = (card.model_extra or {}).get("lokal")
        if isinstance(facts, dict) and facts.get("synthetic") is True:
            out.add(card.id)
    return out


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
    synthetic = await synthetic_models(client)
    cl.user_session.set("synthetic", synthetic)
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
            Slider(
                id="min_score",
                label="Minimum similarity a passage needs (below it for all: no answer)",
                initial=defaults.min_score,
                min=0.0,
                max=1.0,
                step=0.05,
            ),
            Slider(id="temperature", label="Temperature", initial=defaults.temperature, min=0.0, max=2.0, step=0.1),
            Slider(id="max_tokens", label="Max tokens", initial=defaults.max_tokens, min=32, max=4096, step=32),
        ]
    ).send()
    cl.user_session.set("settings", settings)
    if not collections:
        notes.append("No collections yet: index documents with `lokal rag ingest PATH --collection NAME`.")
    greeting = f"Asking **{collection}** with **{model or 'the first model offered'}**."
    if model in synthetic:
        notes.insert(0, SYNTHETIC_NOTE.format(model=model))
    await cl.Message(content="\n\n".join([greeting, *notes]), author=AUTHOR).send()


async def on_settings_update(settings: dict[str, Any]) -> None:
    current = dict(cl.user_session.get("settings") or {})
    current.update(settings)
    cl.user_session.set("settings", current)


def _listed(answer: Answer) -> list[tuple[int, Any]]:
    """Passages in the order the answer cites them (reading order), then the ones given but not cited."""
    cited = [(n, answer.sources[n - 1]) for n in answer.cited]
    rest = [(n, h) for n, h in enumerate(answer.sources, start=1) if n not in answer.cited]
    return cited + rest


def source_elements(answer: Answer) -> list[cl.Text]:
    """Each passage given to the model, as a side element the user can open from the message."""
    cited = set(answer.cited)
    elements = []
    for n, hit in _listed(answer):
        title = f"**{citation_label(n, hit)}**{' (cited)' if n in cited else ''}"
        elements.append(cl.Text(name=f"source {n}", content=f"{title}\n\n`{hit.source}`\n\n{hit.text}", display="side"))
    return elements


def sources_footer(answer: Answer) -> str:
    if not answer.sources:
        return ""
    if not answer.cited:
        lines = [f"- source {n}: {h.name}, {h.location}" for n, h in enumerate(answer.sources, start=1)]
        return "\n\n**Context given to the model (the answer cites none of it)**\n" + "\n".join(lines)
    cited = set(answer.cited)
    lines = [f"- source {n}: {h.name}, {h.location}" for n, h in _listed(answer) if n in cited]
    unused = [f"source {n}" for n, _ in enumerate(answer.sources, start=1) if n not in cited]
    tail = f"\n\nAlso given to the model, not cited: {', '.join(unused)}" if unused else ""
    return "\n\n**Sources** (in the order cited)\n" + "\n".join(lines) + tail


def _setting(settings: dict[str, Any], key: str, default: float, kind: type = float) -> Any:
    value = settings.get(key)
    try:
        return kind(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


async def ingest_uploads(message: cl.Message, collection: str, home: Path | None) -> str | None:
    """Files attached to the message, copied under LOKAL_HOME/rag/uploads/<collection> and ingested into the
    collection (created if new); a line saying what happened, or None when nothing was attached."""
    files = [e for e in (message.elements or []) if getattr(e, "path", None)]
    if not files:
        return None
    from lokal.rag.index import Index, check_name, rag_dir
    from lokal.rag.ingest import ingest

    check_name(collection)
    folder = rag_dir(home or retrievers().home) / "uploads" / collection
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for element in files:
        # The original name keeps the extension the loaders go by; the folder keeps the upload for re-ingests.
        name = Path(str(element.name or "upload")).name or "upload"
        target = folder / name
        await asyncio.to_thread(shutil.copyfile, str(element.path), target)
        paths.append(target)

    def run() -> Any:
        with Index.open(collection, home or retrievers().home, create=True) as index:
            return ingest(index, paths)

    report = await asyncio.to_thread(run)
    done = [r for r in report.results if r.status in ("added", "updated", "unchanged")]
    skipped = [f"{Path(r.path).name} ({r.reason})" for r in report.results if r.status == "skipped"]
    line = f"Added {len(done)} file(s) to **{collection}** ({report.chunks_written} new chunks)"
    return line + (f"; skipped {', '.join(skipped)}" if skipped else "") + "."


async def on_message(message: cl.Message) -> Answer | None:
    """Ingest attached files, retrieve (with the previous question for a follow-up), stream the grounded
    answer token by token with the conversation so far, then attach the passages as elements."""
    defaults = ChatDefaults()
    settings: dict[str, Any] = cl.user_session.get("settings") or {}
    client = cl.user_session.get("client") or make_client(defaults.base_url or default_base_url(), defaults.api_key)
    history: list[dict[str, str]] = list(cl.user_session.get("history") or [])
    collection = str(settings.get("collection") or defaults.collection)
    reply = cl.Message(content="", author=AUTHOR)
    try:
        uploaded = await ingest_uploads(message, collection, defaults.home)
        if uploaded is not None:
            await cl.Message(content=uploaded, author=AUTHOR).send()
            if not message.content.strip():
                return None
        retriever = await asyncio.to_thread(retrievers(defaults.home).get, collection)
        mode: Mode = settings["mode"] if settings.get("mode") in MODES else defaults.mode
        answer = await ask(
            retriever,
            message.content,
            client=client,
            model=settings.get("model") or defaults.model,
            k=_setting(settings, "k", defaults.k, int),
            mode=mode,
            min_score=_setting(settings, "min_score", defaults.min_score),
            max_tokens=_setting(settings, "max_tokens", defaults.max_tokens, int),
            temperature=_setting(settings, "temperature", defaults.temperature),
            history=history[-2 * HISTORY_TURNS :],
            on_token=reply.stream_token,
        )
    except LokalError as exc:
        reply.content = f"**Error:** {exc.message}"
        await reply.send()
        return None
    synthetic = cl.user_session.get("synthetic") or set()
    label = f"\n\n{SYNTHETIC_NOTE.format(model=answer.model)}" if answer.model in synthetic else ""
    if answer.refused:
        reply.content = answer.text
    else:
        reply.content = answer.text + label + sources_footer(answer)
        reply.elements = source_elements(answer)  # type: ignore[assignment]
        # Only answered turns are remembered: a refusal is not something the model said.
        history += [{"role": "user", "content": message.content}, {"role": "assistant", "content": answer.text}]
        cl.user_session.set("history", history)
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
