"""Grounded answers: retrieve, gate on relevance, prompt with numbered passages, stream, parse citations.

Works against any OpenAI-compatible endpoint (lokal by default) through the official `openai` client.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from lokal.config import get_settings
from lokal.errors import InvalidRequest, ModelNotFound, UpstreamError
from lokal.rag.gate import (
    DEFAULT_MAX_CONTEXT_CHARS,
    DEFAULT_MIN_SCORE,
    Gate,
    apply_gate,
    refusal,
    select_context,
)
from lokal.rag.retrieve import Hit, Mode, Retriever

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.chat import ChatCompletionChunk

__all__ = [
    "DEFAULT_MAX_CONTEXT_CHARS",
    "DEFAULT_MIN_SCORE",
    "Answer",
    "Gate",
    "answer_from",
    "ask",
    "build_messages",
    "citation_label",
    "make_client",
    "refusal",
    "retrieval_query",
    "select_context",
]

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages the user gives you. "
    "Cite the passage behind every statement with its number in square brackets, like [1] or [2][3]. "
    "If the passages do not contain the answer, say that the context is insufficient to answer; "
    "do not guess and do not use outside knowledge."
)

_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def default_base_url() -> str:
    s = get_settings()
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    return f"http://{host}:{s.port}/v1"


@dataclass
class Answer:
    question: str
    text: str = ""
    sources: list[Hit] = field(default_factory=list)  # passage [n] is sources[n - 1]
    cited: list[int] = field(default_factory=list)
    refused: bool = False
    reason: str = ""
    model: str | None = None

    @property
    def cited_sources(self) -> list[Hit]:
        return [self.sources[n - 1] for n in self.cited]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "model": self.model,
            "refused": self.refused,
            "reason": self.reason,
            "cited": self.cited,
            "sources": [{"n": i, **h.to_dict()} for i, h in enumerate(self.sources, start=1)],
        }


def citation_label(n: int, hit: Hit) -> str:
    return f"[{n}] {hit.name}, {hit.location}"


Turn = dict[str, str]  # {"role": "user" | "assistant", "content": ...}, an earlier turn of a conversation


def build_messages(question: str, context: Sequence[Hit], history: Sequence[Turn] = ()) -> list[dict[str, str]]:
    """System rules, the earlier turns as they were said (without their passages), then this question with
    its numbered passages: a follow-up ("and how long does that take?") reads in the conversation's light."""
    passages = "\n\n".join(f"{citation_label(i, h)}\n{h.text}" for i, h in enumerate(context, start=1))
    user = f"Context:\n\n{passages}\n\nQuestion: {question}\nAnswer (cite passages like [1]):"
    earlier = [{"role": t["role"], "content": t["content"]} for t in history if t.get("role") in ("user", "assistant")]
    return [{"role": "system", "content": SYSTEM_PROMPT}, *earlier, {"role": "user", "content": user}]


def retrieval_query(question: str, history: Sequence[Turn] = ()) -> str:
    """What to search for: a follow-up alone ("what about the blades?") names too little, so the previous
    question goes with it."""
    previous = [t["content"] for t in history if t.get("role") == "user"]
    return f"{previous[-1]}\n{question}" if previous else question


def parse_citations(text: str, n_sources: int) -> list[int]:
    """Valid passage numbers cited in `text`, in order of first appearance ([1], [2, 3], [1][2])."""
    seen: dict[int, None] = {}
    for m in _CITATION.finditer(text):
        for part in re.split(r"\s*[,;]\s*", m.group(1)):
            n = int(part)
            if 1 <= n <= n_sources:
                seen.setdefault(n, None)
    return list(seen)


def split_answer_sentences(text: str) -> list[str]:
    """Sentences of an answer; a citation after the full stop ("... 5273. [1]") stays with its sentence."""
    parts = re.split(r"(?<=[.!?])\s+(?!\[\d)|\n+", text)
    return [p.strip() for p in parts if p and p.strip() and not _CITATION.fullmatch(p.strip())]


def make_client(base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0) -> AsyncOpenAI:
    from openai import AsyncOpenAI

    key = api_key or get_settings().api_key or "lokal"  # the client insists on a key; lokal ignores it
    return AsyncOpenAI(base_url=base_url or default_base_url(), api_key=key, timeout=timeout, max_retries=0)


def _upstream(exc: Exception, client: AsyncOpenAI, model: str | None) -> Exception:
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(f"cannot reach {client.base_url}: is `lokal serve` (or your endpoint) running?")
    if isinstance(exc, openai.NotFoundError):
        return ModelNotFound(f"model {model!r} not found at {client.base_url}", param="model")
    if isinstance(exc, openai.APIStatusError):
        return UpstreamError(f"{client.base_url} answered {exc.status_code}: {exc.message}")
    return exc


async def list_models(client: AsyncOpenAI) -> list[str]:
    """Chat model ids offered by the endpoint (embedding models left out by name)."""
    import openai

    try:
        page = await client.models.list()
    except openai.OpenAIError as exc:
        raise _upstream(exc, client, None) from exc
    chat = []
    for m in page.data:
        task = ((m.model_extra or {}).get("lokal") or {}).get("task")  # lokal says what each model does
        if task == "embeddings" or (task is None and any(w in m.id.lower() for w in ("embed", "minilm"))):
            continue
        chat.append(m.id)
    return chat


async def resolve_model(client: AsyncOpenAI, model: str | None) -> str:
    if model:
        return model
    models = await list_models(client)
    if not models:
        raise ModelNotFound(f"{client.base_url} offers no chat model: pass --model", param="model")
    return models[0]


async def stream_completion(
    client: AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int = 512,
    temperature: float = 0.1,
) -> AsyncIterator[str]:
    import openai

    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        async for event in cast("AsyncStream[ChatCompletionChunk]", stream):
            if event.choices and event.choices[0].delta.content:
                yield event.choices[0].delta.content
    except openai.OpenAIError as exc:
        raise _upstream(exc, client, model) from exc


async def ask(
    retriever: Retriever,
    question: str,
    *,
    client: AsyncOpenAI,
    model: str | None = None,
    k: int = 4,
    mode: Mode = "hybrid",
    filters: Mapping[str, str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS,
    max_tokens: int = 512,
    temperature: float = 0.1,
    history: Sequence[Turn] = (),
    on_token: Callable[[str], Awaitable[None] | None] | None = None,
) -> Answer:
    """Answer `question` from the collection, or refuse without calling the model when nothing is relevant."""
    if not question.strip():
        raise InvalidRequest("the question is empty", param="question")
    query = retrieval_query(question, history)
    hits = retriever.with_similarity(query, retriever.search(query, k=k, mode=mode, filters=filters))
    return await answer_from(
        apply_gate(hits, min_score, max_context_chars),
        question,
        retriever.name,
        client=client,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        history=history,
        on_token=on_token,
    )


async def answer_from(
    gate: Gate,
    question: str,
    collection: str,
    *,
    client: AsyncOpenAI,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.1,
    history: Sequence[Turn] = (),
    on_token: Callable[[str], Awaitable[None] | None] | None = None,
) -> Answer:
    """The answer from a gated search, wherever it ran (in this process, or the server's warm search)."""
    answer = Answer(question=question, sources=gate.context)
    text = gate.refusal(collection)
    if text is not None:
        answer.refused = True
        answer.reason = "no relevant context"
        answer.text = text
        return answer
    answer.model = await resolve_model(client, model)
    parts: list[str] = []
    async for token in stream_completion(
        client,
        answer.model,
        build_messages(question, gate.context, history),
        max_tokens=max_tokens,
        temperature=temperature,
    ):
        parts.append(token)
        if on_token is not None:
            pending = on_token(token)
            if pending is not None:
                await pending
    answer.text = "".join(parts)
    answer.cited = parse_citations(answer.text, len(gate.context))
    return answer
