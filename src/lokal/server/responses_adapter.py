"""Chat-completion chunks in, Responses stream events and the response object out.

The Responses routes read every answer as OpenAI chat chunks (dicts from server/chat_chunks.py, whatever
serving's chunks are made of; a whole answer reads as the chunks of a stream of it): content deltas become
an assistant message item with one output_text part, each tool call's deltas a function_call item, the finish
reason and usage the response's status and usage. The same `Builder` serves a streamed request (its events go
out as SSE) and a whole one (its `response()` at the end), so both give the same response object.

Items come one after another, as at OpenAI: an item is done (its `.done` events sent) when the next one begins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lokal.errors import EngineError, LokalError
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.common import now
from lokal.protocol.logprobs import TokenLogprob
from lokal.protocol.responses_api import ResponsesRequest, new_id
from lokal.protocol.responses_output import (
    ContentPartAdded,
    ContentPartDone,
    ErrorEvent,
    FunctionCall,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    IncompleteDetails,
    InputTokensDetails,
    OutputItem,
    OutputItemAdded,
    OutputItemDone,
    OutputMessage,
    OutputText,
    OutputTextDelta,
    OutputTextDone,
    Response,
    ResponseCompleted,
    ResponseCreated,
    ResponseError,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseStatus,
    StreamEvent,
    TextEcho,
    Usage,
)

ItemStatus = Literal["in_progress", "completed", "incomplete"]


@dataclass(slots=True)
class _Item:
    id: str
    call_index: int | None = None  # the chat tool-call index a function_call item carries; None: a message
    call_id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)  # text, or the arguments' JSON text
    logprobs: list[TokenLogprob] = field(default_factory=list)
    status: ItemStatus = "in_progress"

    def model(self) -> OutputItem:
        text = "".join(self.parts)
        if self.call_index is None:
            part = OutputText(text=text, logprobs=self.logprobs)
            return OutputMessage(id=self.id, status=self.status, content=[part] if self.status != "in_progress" else [])
        return FunctionCall(id=self.id, call_id=self.call_id, name=self.name, arguments=text, status=self.status)


class Builder:
    def __init__(self, request: ResponsesRequest, chat: ChatCompletionRequest) -> None:
        self.id = new_id("resp")
        self.created_at = now()
        self.request, self.chat = request, chat
        self.model = chat.model
        self.items: list[_Item] = []
        self.open: _Item | None = None
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.error: ResponseError | None = None
        self.final: ResponseStatus | None = None  # set by end() or fail()
        self.started = False
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq - 1

    # -- events ------------------------------------------------------------------------------------------------
    def begin(self) -> list[StreamEvent]:
        """response.created and response.in_progress, once (sent with the first chunk: until then the stream's
        keep-alive comments hold the connection through a queue or a long prompt read)."""
        if self.started:
            return []
        self.started = True
        snapshot = self.response()
        return [
            ResponseCreated(sequence_number=self._next(), response=snapshot),
            ResponseInProgress(sequence_number=self._next(), response=snapshot),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        events = self.begin()
        usage = chunk.get("usage")
        if usage:
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            self.usage = Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                input_tokens_details=InputTokensDetails(cached_tokens=int(cached)),
                output_tokens=int(usage.get("completion_tokens") or 0),
                total_tokens=int(usage.get("total_tokens") or 0),
            )
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            logprobs = [TokenLogprob.model_validate(e) for e in (choice.get("logprobs") or {}).get("content") or ()]
            if delta.get("content"):
                self._text(delta["content"], logprobs, events)
            elif logprobs and self.open is not None and self.open.call_index is None:
                self.open.logprobs.extend(logprobs)  # tokens of a step whose text is still held back
            for call in delta.get("tool_calls") or ():
                self._call(call, events)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def end(self) -> list[StreamEvent]:
        """The last events: the open item's done events and response.completed (or .incomplete)."""
        events = self.begin()
        self.final = "incomplete" if self.finish == "length" else "completed"
        if not self.items:  # nothing generated: still the (empty) message an answer is, as at OpenAI
            self._message(events)
        self._close(events, self.final)
        done = ResponseIncomplete if self.final == "incomplete" else ResponseCompleted
        events.append(done(sequence_number=self._next(), response=self.response()))
        return events

    def fail(self, exc: LokalError) -> list[StreamEvent]:
        """A generation that failed after the stream began: response.failed, carrying the error."""
        events = self.begin()
        if self.open is not None:
            self.open.status = "incomplete"
            self.open = None
        self.error = ResponseError(code=exc.code or "server_error", message=exc.message)
        self.final = "failed"
        events.append(ResponseFailed(sequence_number=self._next(), response=self.response()))
        return events

    def error_event(self, exc: LokalError) -> ErrorEvent:
        return ErrorEvent(sequence_number=self._next(), code=exc.code, message=exc.message, param=exc.param)

    # -- the response object -----------------------------------------------------------------------------------
    def response(self) -> Response:
        req, chat, status = self.request, self.chat, self.final or "in_progress"
        return Response(
            id=self.id,
            created_at=self.created_at,
            status=status,
            error=self.error,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
            instructions=req.instructions,
            max_output_tokens=req.max_output_tokens,
            metadata=req.metadata or {},
            model=self.model,
            output=[i.model() for i in self.items],
            parallel_tool_calls=req.parallel_tool_calls is not False,
            previous_response_id=req.previous_response_id,
            store=bool(req.store),
            temperature=chat.temperature,
            text=TextEcho(format=req.format),
            tool_choice=req.tool_choice if req.tool_choice is not None else "auto",  # OpenAI's default
            tools=req.tools or [],
            top_logprobs=req.top_logprobs or 0,
            top_p=chat.top_p,
            usage=self.usage if self.final is not None else None,
            user=req.user,
        )

    # -- items -------------------------------------------------------------------------------------------------
    def _message(self, events: list[StreamEvent]) -> _Item:
        item = self._open(_Item(new_id("msg")), events)
        events.append(
            ContentPartAdded(
                sequence_number=self._next(),
                item_id=item.id,
                output_index=len(self.items) - 1,
                content_index=0,
                part=OutputText(text=""),
            )
        )
        return item

    def _text(self, text: str, logprobs: list[TokenLogprob], events: list[StreamEvent]) -> None:
        item = self.open
        if item is None or item.call_index is not None:
            item = self._message(events)
        item.parts.append(text)
        item.logprobs.extend(logprobs)
        events.append(
            OutputTextDelta(
                sequence_number=self._next(),
                item_id=item.id,
                output_index=len(self.items) - 1,
                content_index=0,
                delta=text,
                logprobs=logprobs,
            )
        )

    def _call(self, call: dict[str, Any], events: list[StreamEvent]) -> None:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        item = self.open
        if item is None or item.call_index != index:
            if any(i.call_index == index for i in self.items):
                raise EngineError(f"tool call {index} continued after a later item began")
            name = function.get("name")
            if not name:
                raise EngineError(f"tool call {index} began without a function name")
            call_id = call.get("id") or new_id("call")
            item = self._open(_Item(new_id("fc"), call_index=index, call_id=call_id, name=name), events)
        arguments = function.get("arguments")
        if arguments:
            item.parts.append(arguments)
            events.append(
                FunctionCallArgumentsDelta(
                    sequence_number=self._next(), item_id=item.id, output_index=len(self.items) - 1, delta=arguments
                )
            )

    def _open(self, item: _Item, events: list[StreamEvent]) -> _Item:
        self._close(events, "completed")
        self.items.append(item)
        self.open = item
        events.append(
            OutputItemAdded(sequence_number=self._next(), output_index=len(self.items) - 1, item=item.model())
        )
        return item

    def _close(self, events: list[StreamEvent], status: ItemStatus) -> None:
        item = self.open
        if item is None:
            return
        self.open = None
        item.status = status
        index = self.items.index(item)
        if item.call_index is None:
            text = "".join(item.parts)
            events.append(
                OutputTextDone(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=item.logprobs,
                )
            )
            part = OutputText(text=text, logprobs=item.logprobs)
            events.append(
                ContentPartDone(
                    sequence_number=self._next(), item_id=item.id, output_index=index, content_index=0, part=part
                )
            )
        else:
            events.append(
                FunctionCallArgumentsDone(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    name=item.name,
                    arguments="".join(item.parts),
                )
            )
        events.append(OutputItemDone(sequence_number=self._next(), output_index=index, item=item.model()))


__all__ = ["Builder"]
