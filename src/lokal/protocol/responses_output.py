"""What /v1/responses sends back: the response object, the items it holds and stores, and the stream events.

Items are kept in one normalised form (`StoredItem`): the input of a stored response, the output it gave and the
items a client sends back all read the same way, so a conversation continued with previous_response_id is the
stored items followed by the new ones. The request side is protocol/responses_api.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from lokal.protocol.logprobs import TokenLogprob
from lokal.protocol.responses_api import (
    AllowedTools,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    FunctionTool,
    MessageItem,
    ResponsesRequest,
    Role,
    TextFormat,
    new_id,
)

Status = Literal["in_progress", "completed", "incomplete"]


# -- stored items (the input_items list, and how conversations are kept) -------------------------------------
class InputTextPart(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[TokenLogprob] = Field(default_factory=list)


class InputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["user", "system", "developer"]
    status: Status = "completed"
    content: list[InputTextPart]


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Status
    content: list[OutputText]


class FunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Status


class FunctionCallOutput(BaseModel):
    type: Literal["function_call_output"] = "function_call_output"
    id: str
    call_id: str
    output: str
    status: Status = "completed"


OutputItem = OutputMessage | FunctionCall
StoredItem = InputMessage | OutputMessage | FunctionCall | FunctionCallOutput


def stored_message(role: Role, text: str, item_id: str | None = None) -> StoredItem:
    if role == "assistant":
        return OutputMessage(id=item_id or new_id("msg"), status="completed", content=[OutputText(text=text)])
    return InputMessage(id=item_id or new_id("msg"), role=role, content=[InputTextPart(text=text)])


def stored(item: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> StoredItem:
    if isinstance(item, MessageItem):
        return stored_message(item.role, item.text(), item.id)
    if isinstance(item, FunctionCallItem):
        return FunctionCall(
            id=item.id or new_id("fc"),
            call_id=item.call_id,
            name=item.name,
            arguments=item.arguments,
            status=item.status or "completed",
        )
    return FunctionCallOutput(id=item.id or new_id("fco"), call_id=item.call_id, output=item.text())


def request_items(body: ResponsesRequest) -> list[StoredItem]:
    """A request's input in stored form (ids given to the items that came without)."""
    if body.input is None:
        return []
    if isinstance(body.input, str):
        return [stored_message("user", body.input)]
    return [stored(item) for item in body.input]


# -- the response object ---------------------------------------------------------------------------------------
class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class TextEcho(BaseModel):
    format: TextFormat


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: None = None
    store: bool = True
    temperature: float
    text: TextEcho
    tool_choice: str | FunctionChoice | AllowedTools
    tools: list[FunctionTool]
    top_logprobs: int = 0
    top_p: float
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: Usage | None = None
    user: str | None = None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]  # stored items (StoredItem dumps), as kept
    first_id: str | None
    last_id: str | None
    has_more: bool


# -- stream events ---------------------------------------------------------------------------------------------
class _Event(BaseModel):
    sequence_number: int


class ResponseCreated(_Event):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseInProgress(_Event):
    type: Literal["response.in_progress"] = "response.in_progress"
    response: Response


class ResponseCompleted(_Event):
    type: Literal["response.completed"] = "response.completed"
    response: Response


class ResponseIncomplete(_Event):
    type: Literal["response.incomplete"] = "response.incomplete"
    response: Response


class ResponseFailed(_Event):
    type: Literal["response.failed"] = "response.failed"
    response: Response


class OutputItemAdded(_Event):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    output_index: int
    item: OutputItem


class OutputItemDone(_Event):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    output_index: int
    item: OutputItem


class _InItem(_Event):
    item_id: str
    output_index: int


class ContentPartAdded(_InItem):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    content_index: int
    part: OutputText


class ContentPartDone(_InItem):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    content_index: int
    part: OutputText


class OutputTextDelta(_InItem):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    content_index: int
    delta: str
    logprobs: list[TokenLogprob] = Field(default_factory=list)


class OutputTextDone(_InItem):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    content_index: int
    text: str
    logprobs: list[TokenLogprob] = Field(default_factory=list)


class FunctionCallArgumentsDelta(_InItem):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    delta: str


class FunctionCallArgumentsDone(_InItem):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    name: str
    arguments: str


class ErrorEvent(_Event):
    """A failure the stream could not put into a response.failed event (the openai SDK raises it)."""

    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None


StreamEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | ErrorEvent
)


__all__ = [
    "ContentPartAdded",
    "ContentPartDone",
    "ErrorEvent",
    "FunctionCall",
    "FunctionCallArgumentsDelta",
    "FunctionCallArgumentsDone",
    "FunctionCallOutput",
    "IncompleteDetails",
    "InputMessage",
    "InputTextPart",
    "ItemList",
    "OutputItem",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputMessage",
    "OutputText",
    "OutputTextDelta",
    "OutputTextDone",
    "Response",
    "ResponseCompleted",
    "ResponseCreated",
    "ResponseDeleted",
    "ResponseError",
    "ResponseFailed",
    "ResponseInProgress",
    "ResponseIncomplete",
    "ResponseStatus",
    "StoredItem",
    "StreamEvent",
    "TextEcho",
    "Usage",
    "request_items",
    "stored",
    "stored_message",
]
