"""The chunks of a streamed chat or text completion, built from the typed models in protocol/outputs.py.

Most chunks of a stream are one token of text for one choice, and only that text changes between them, so
that chunk is serialised once per stream and choice (`Template`) and each token costs a string concatenation
plus one JSON string escape: measured, building and dumping a model per token cost several times more. The
template comes from the typed model itself, so the bytes are model_dump_json's (tests/protocol compare them
for every kind of character). Rarer chunks (the role, tool calls, logprobs, the finish, usage) are models.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring  # C-accelerated; ensure_ascii=False, as model_dump_json writes

from pydantic import BaseModel

from lokal.engines.base import TokenLogprob, ToolCallDelta
from lokal.protocol.logprobs import chat_logprobs, completion_logprobs
from lokal.protocol.outputs import (
    ChatCompletionChunk,
    ChoiceDelta,
    ChunkChoice,
    Completion,
    CompletionChoice,
    FinishReason,
    FunctionDelta,
    ToolCallChunk,
    Usage,
)

_SENTINEL = "\x00lokal-text\x00"  # a string no serialised head or tail contains


class Template:
    """A chunk serialised once around its one string field: `template(text)` is the chunk with that text."""

    __slots__ = ("head", "tail")

    def __init__(self, chunk: BaseModel) -> None:
        dumped = chunk.model_dump_json()
        marker = encode_basestring(_SENTINEL)
        if dumped.count(marker) != 1:
            raise ValueError("a template chunk needs the sentinel in exactly one string field")
        self.head, _, self.tail = dumped.partition(marker)

    def __call__(self, text: str) -> str:
        return self.head + encode_basestring(text) + self.tail


class ChatChunks:
    """Every chunk of one streamed chat completion (all its choices share id, created and model)."""

    def __init__(self, rid: str, created: int, model: str, fingerprint: str | None) -> None:
        self.rid, self.created, self.model, self.fingerprint = rid, created, model, fingerprint
        self._text: dict[int, Template] = {}

    def chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.rid,
            created=self.created,
            model=self.model,
            system_fingerprint=self.fingerprint,
            choices=choices,
            usage=usage,
        )

    def _one(self, index: int, delta: ChoiceDelta, **kw: object) -> ChatCompletionChunk:
        return self.chunk([ChunkChoice(index=index, delta=delta, **kw)])  # type: ignore[arg-type]

    def role(self, index: int) -> ChatCompletionChunk:
        return self._one(index, ChoiceDelta(role="assistant", content=""))

    def text(self, index: int, text: str) -> str:
        """The hot path: serialised JSON of `content(index, text)`."""
        template = self._text.get(index)
        if template is None:
            template = self._text[index] = Template(self.content(index, _SENTINEL))
        return template(text)

    def content(self, index: int, text: str, logprobs: Sequence[TokenLogprob] = ()) -> ChatCompletionChunk:
        lp = chat_logprobs(logprobs) if logprobs else None
        return self._one(index, ChoiceDelta(content=text), logprobs=lp)

    def tool_calls(self, index: int, deltas: Sequence[ToolCallDelta]) -> ChatCompletionChunk:
        return self._one(index, ChoiceDelta(tool_calls=[tool_call_chunk(d) for d in deltas]))

    def logprobs_only(self, index: int, logprobs: Sequence[TokenLogprob]) -> ChatCompletionChunk:
        """Log probabilities of tokens whose text is not content (tool-call markup, held-back text)."""
        return self._one(index, ChoiceDelta(), logprobs=chat_logprobs(logprobs))

    def finish(self, index: int, reason: FinishReason) -> ChatCompletionChunk:
        return self._one(index, ChoiceDelta(), finish_reason=reason)

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self.chunk([], usage)


class CompletionChunks:
    """Every chunk of one streamed text completion (OpenAI streams Completion objects)."""

    def __init__(self, rid: str, created: int, model: str, fingerprint: str | None) -> None:
        self.rid, self.created, self.model, self.fingerprint = rid, created, model, fingerprint
        self._text: dict[int, Template] = {}

    def chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(
            id=self.rid,
            created=self.created,
            model=self.model,
            system_fingerprint=self.fingerprint,
            choices=choices,
            usage=usage,
        )

    def text(self, index: int, text: str) -> str:
        """The hot path: serialised JSON of `content(index, text)`."""
        template = self._text.get(index)
        if template is None:
            template = self._text[index] = Template(self.content(index, _SENTINEL))
        return template(text)

    def content(
        self, index: int, text: str, logprobs: Sequence[TokenLogprob] = (), offsets: Sequence[int] = ()
    ) -> Completion:
        lp = completion_logprobs(logprobs, offsets) if logprobs else None
        return self.chunk([CompletionChoice(index=index, text=text, logprobs=lp)])

    def finish(self, index: int, reason: FinishReason) -> Completion:
        return self.chunk([CompletionChoice(index=index, text="", finish_reason=reason)])

    def usage(self, usage: Usage) -> Completion:
        return self.chunk([], usage)


def tool_call_chunk(d: ToolCallDelta) -> ToolCallChunk:
    """The first piece of a call names it (id, type, name, empty arguments, as OpenAI streams it)."""
    if d.id is not None:
        return ToolCallChunk(
            index=d.index, id=d.id, type="function", function=FunctionDelta(name=d.name, arguments=d.arguments)
        )
    return ToolCallChunk(index=d.index, function=FunctionDelta(name=d.name, arguments=d.arguments))


__all__ = ["ChatChunks", "CompletionChunks", "Template", "tool_call_chunk"]
