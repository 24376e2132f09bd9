"""/v1/chat/completions request shape, and its conversion to an engine request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lokal.engines.base import ChatMessage, GenerationRequest
from lokal.errors import InvalidRequest
from lokal.protocol import unsupported
from lokal.protocol.common import OpenAIModel, SamplingParams, check_max_tokens
from lokal.protocol.tools import AssistantToolCall, NamedToolChoice, ResponseFormat, ToolChoice, choice_value
from lokal.protocol.unsupported import Unsupported
from lokal.toolcalls import check_tools, json_schema_grammar

Role = Literal["system", "user", "assistant", "tool", "developer"]
MAX_TOP_LOGPROBS = 20


class Message(OpenAIModel):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # a participant's name is unused (templates have no place for it); a tool's is kept
    tool_calls: list[AssistantToolCall] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: the call this is the result of
    function_call: Any = None  # the legacy form of tool_calls: refused by name
    audio: Any = None

    @field_validator(*unsupported.MESSAGE)
    @classmethod
    def _refuse_unsupported(cls, v: Any, info: ValidationInfo) -> Any:
        return unsupported.check(unsupported.MESSAGE, info.field_name, v)

    @field_validator("content")
    @classmethod
    def _text_parts(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(v, list):
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported ({'type': 'text', 'text': ...})")
        return v

    @model_validator(mode="after")
    def _tool_turns(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role} messages")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p["text"]) for p in self.content)


class ChatCompletionRequest(SamplingParams):
    unsupported_fields: ClassVar[Mapping[str, Unsupported]] = unsupported.CHAT

    messages: list[Message] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None  # normalised by lokal.toolcalls.check_tools
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    web_search_options: Any = None

    @field_validator("max_completion_tokens")
    @classmethod
    def _positive_completion(cls, v: int | None) -> int | None:
        return check_max_tokens("max_completion_tokens", v)

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, v: Any) -> Any:
        if v is None or v == []:
            return None
        return check_tools(v)  # InvalidRequest(param="tools") naming what is wrong

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice(cls, v: Any) -> Any:
        if v is None or v in ("none", "auto", "required"):
            return v
        fn = v.get("function") if isinstance(v, dict) else None
        if isinstance(v, dict) and v.get("type") == "function" and isinstance(fn, dict) and fn.get("name"):
            return v
        raise ValueError("must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not self.tools:
            raise InvalidRequest(f"tool_choice {choice_value(choice)!r} needs tools", param="tool_choice")
        if isinstance(choice, NamedToolChoice):
            names = [t["function"]["name"] for t in self.tools or ()]
            if choice.function.name not in names:
                raise InvalidRequest(
                    f"tool_choice names the function {choice.function.name!r}, which is not among the tools "
                    f"({', '.join(names)})",
                    param="tool_choice",
                )
        fmt = self.response_format.type if self.response_format is not None else "text"
        if self.uses_tools and fmt != "text":
            raise InvalidRequest(
                f"response_format {fmt} together with tools is not supported: both constrain the output with a "
                "grammar; send one of them (or tool_choice: 'none')",
                param="response_format",
            )
        return self

    @property
    def uses_tools(self) -> bool:
        """Tools the model may call: tool_choice "none" means answer in text, so they are left out."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def choice(self) -> str | dict[str, Any]:
        return choice_value(self.tool_choice)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    def engine_messages(self) -> tuple[ChatMessage, ...]:
        names: dict[str, str] = {}  # call id -> function name, for the tool turns that answer them
        out = []
        for m in self.messages:
            calls = tuple(c.to_engine() for c in m.tool_calls or ())
            names.update((c.id, c.name) for c in calls)
            role = "system" if m.role == "developer" else m.role
            name = (m.name or names.get(m.tool_call_id or "")) if m.role == "tool" else None
            out.append(ChatMessage(role, m.text(), tool_calls=calls, tool_call_id=m.tool_call_id, name=name))
        return tuple(out)

    def to_engine(self, max_tokens: int | None) -> GenerationRequest:
        """The engine request before a model is picked; serving adds the tool-call grammar of the model's
        family (lokal.toolcalls.tool_constraint) once it knows the model."""
        grammar, json_mode = None, False
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_object":
            json_mode = True
        elif fmt is not None and fmt.json_schema is not None:
            if fmt.json_schema.schema_ is None:  # a name and no schema: any JSON object
                json_mode = True
            else:
                grammar = json_schema_grammar(fmt.json_schema.schema_)  # 400 naming what it cannot express
        return GenerationRequest(
            messages=self.engine_messages(),
            max_tokens=max_tokens,
            json_mode=json_mode,
            grammar=grammar,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            tools=tuple(self.tools or ()) if self.uses_tools else (),
            passthrough=self.passthrough(),
            **self.sampling(),
        )

    def passthrough(self) -> dict[str, Any]:
        """The raw OpenAI fields an upstream that speaks the API honours itself."""
        out: dict[str, Any] = {}
        if self.uses_tools:
            out["tool_choice"] = self.choice
            if self.parallel_tool_calls is not None:
                out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.response_format is not None:
            out["response_format"] = self.response_format.model_dump(by_alias=True, exclude_none=True)
        return out
