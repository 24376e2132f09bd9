"""Request bodies -> engine requests: every field OpenAI, vLLM and llama.cpp clients send is either honoured
(and reaches the GenerationRequest) or refused by name; never accepted and dropped."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lokal.engines.base import ToolCall
from lokal.errors import InvalidRequest
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.completions import CompletionRequest
from lokal.protocol.decode import validation_message

MSG = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def chat(**patch: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **patch})


def refusal(model: type[ChatCompletionRequest | CompletionRequest], body: dict[str, Any]) -> tuple[str, str | None]:
    """(message, param) of the 400 the server would answer."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return validation_message(exc)
    except InvalidRequest as exc:
        return exc.message, exc.param
    raise AssertionError(f"accepted: {body}")


def test_chat_request_becomes_an_engine_request() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}, *MSG],
         "max_completion_tokens": 9, "stop": "END", "seed": 3, "ignore_eos": True,
         "response_format": {"type": "json_object"}, "user": "ignored-field"}
    )
    req = body.to_engine(body.requested_max_tokens)
    assert req.max_tokens == 9 and req.stop == ("END",) and req.seed == 3
    assert req.ignore_eos and req.json_mode and req.grammar is None
    assert req.messages is not None and req.messages[0].role == "system" and req.messages[0].content == "be brief"
    assert req.passthrough == {"response_format": {"type": "json_object"}}


def test_sampling_fields_reach_the_engine() -> None:
    req = chat(presence_penalty=0.5, frequency_penalty=-1, logit_bias={"42": -100, "7": 5.5}, top_k=0, min_p=0.1,
               repetition_penalty=1.3, logprobs=True, top_logprobs=3, n=4).to_engine(5)
    assert (req.presence_penalty, req.frequency_penalty, req.top_k, req.min_p) == (0.5, -1.0, 0, 0.1)
    assert req.logit_bias == {42: -100.0, 7: 5.5} and req.repeat_penalty == 1.3 and req.logprobs == 3
    assert chat(repeat_penalty=1.1).to_engine(5).repeat_penalty == 1.1
    assert chat(logprobs=True).to_engine(5).logprobs == 0  # the sampled token's logprob, no alternatives
    plain = chat().to_engine(5)
    assert (plain.top_k, plain.min_p, plain.repeat_penalty, plain.logprobs) == (None, None, 1.0, None)
    assert plain.logit_bias == {} and plain.presence_penalty == plain.frequency_penalty == 0.0


def test_completion_request_fields() -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": ["x"], "logprobs": 2, "n": 2, "top_k": 5})
    req = body.to_engine(4)
    assert body.prompt_text == "x" and req.prompt == "x" and req.logprobs == 2 and req.top_k == 5 and body.n == 2
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 0}).to_engine(4).logprobs == 0
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": ["x", "y"]})


def test_tool_turns_become_engine_messages() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    body = chat(messages=[*MSG, {"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "12 C"}]}],
                tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False)
    req = body.to_engine(8)
    assert req.messages is not None
    assistant, tool = req.messages[1], req.messages[2]
    assert assistant.content == "" and assistant.tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "12 C", "call_1", "get_weather")
    assert [t["function"]["name"] for t in req.tools] == ["get_weather"]
    assert req.passthrough == {"tool_choice": "auto", "parallel_tool_calls": False}


def test_arguments_sent_as_an_object_reach_the_template_as_json_text() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    msgs = chat(messages=[{"role": "assistant", "tool_calls": [call]}]).engine_messages()
    assert msgs[0].tool_calls[0].arguments == '{"a": 1}'


def test_tool_choice_none_leaves_the_tools_out() -> None:
    req = chat(tools=[WEATHER], tool_choice="none").to_engine(5)
    assert req.tools == () and "tool_choice" not in req.passthrough


def test_named_tool_choice_goes_through_to_upstreams() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = chat(tools=[WEATHER], tool_choice=named)
    assert body.choice == named and body.to_engine(5).passthrough["tool_choice"] == named


def test_json_schema_becomes_a_grammar() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    req = chat(response_format=fmt).to_engine(5)
    assert req.grammar and "root" in req.grammar and not req.json_mode
    assert req.passthrough["response_format"] == fmt
    nameless = chat(response_format={"type": "json_schema", "json_schema": {"name": "any"}}).to_engine(5)
    assert nameless.json_mode and nameless.grammar is None  # a name without a schema: any JSON object


TOOL_CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("patch", "field", "phrase"),
    [
        ({"max_completion_tokens": 0}, "max_completion_tokens", "positive integer"),
        ({"max_completion_tokens": 10**9}, "max_completion_tokens", "absurd"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"n": 9}, "n", "less than or equal to 8"),
        ({"n": True}, "n", "integer"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
        ({"top_logprobs": 2}, "top_logprobs", "logprobs: true"),
        ({"presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
        ({"frequency_penalty": -3}, "frequency_penalty", "greater than or equal to -2"),
        ({"logit_bias": {"fifty": 1}}, "logit_bias", "integer strings"),
        ({"logit_bias": {"-1": 1}}, "logit_bias", "integer strings"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "-100 to 100"),
        ({"top_k": -1}, "top_k", "greater than or equal to 0"),
        ({"min_p": 1.5}, "min_p", "less than or equal to 1"),
        ({"repeat_penalty": 0}, "repeat_penalty", "greater than 0"),
        ({"repeat_penalty": 1.1, "repetition_penalty": 1.2}, None, "name the same penalty"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
         "not among the tools"),
        ({"tool_choice": "sometimes"}, "tool_choice", "must be 'none', 'auto', 'required'"),
        ({"tools": [WEATHER], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
         "response_format", "json_schema together with tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "together with tools"),
        ({"response_format": {"type": "xml"}}, "response_format.type", ""),
        ({"response_format": {"type": "json_schema"}}, "response_format", "needs a json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!"}}},
         "response_format.json_schema.name", "letters, digits"),
        ({"messages": []}, "messages", ""),
        ({"temperature": -1}, "temperature", ""),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"seed": 2**64}, "seed", ""),
        ({"messages": [{"role": "tool", "content": "12 C"}]}, "messages.0", "tool_call_id"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [TOOL_CALL]}]}, "messages.0",
         "only assistant messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "messages.0.content",
         "only text content parts"),
        # Still not honoured: refused by name.
        ({"functions": [{"name": "f"}]}, "functions", "send tools and tool_choice"),
        ({"function_call": {"name": "f"}}, "function_call", "send tools and tool_choice"),
        ({"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]},
         "messages.0.function_call", "tool_calls"),
        ({"modalities": ["text", "audio"]}, "modalities", "text only"),
        ({"audio": {"voice": "alloy"}}, "audio", "text only"),
        ({"web_search_options": {}}, "web_search_options", "web search"),
    ],
)
def test_chat_fields_lokal_cannot_honour_are_refused_by_name(
    patch: dict[str, object], field: str | None, phrase: str
) -> None:
    message, param = refusal(ChatCompletionRequest, {"model": "m", "messages": MSG, **patch})
    assert param == field and phrase in message
    if field is not None:
        assert message.startswith(field.split(".")[0])


def test_a_bad_tool_is_refused_naming_tools() -> None:
    message, param = refusal(ChatCompletionRequest, {"model": "m", "messages": MSG,
                                                     "tools": [{"type": "function", "function": {"name": "a b"}}]})
    assert param == "tools" and message


def test_a_schema_feature_the_grammar_cannot_express_is_refused_naming_it() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "patternProperties": {"^x": {"type": "string"}}}
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    with pytest.raises(InvalidRequest) as err:
        body.to_engine(5)
    assert err.value.param == "response_format" and "patternProperties" in err.value.message


def test_neutral_values_clients_send_by_default_pass() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MSG, "presence_penalty": None, "frequency_penalty": 0.0, "logprobs": False,
         "top_logprobs": 0, "tools": [], "tool_choice": "none", "logit_bias": {}, "modalities": ["text"],
         "temperature": None, "top_p": None, "n": None, "user": "u", "metadata": {"a": "b"}, "store": False,
         "parallel_tool_calls": True, "seed": -(2**63), "top_k": 40, "repeat_penalty": 1.0, "functions": [],
         "function_call": "auto"}
    )
    assert body.temperature == 0.8 and body.top_p == 0.95 and body.n == 1  # null means the default
    req = body.to_engine(5)
    assert req.seed == -(2**63) and req.tools == () and req.logprobs is None and req.presence_penalty == 0.0


@pytest.mark.parametrize(
    ("patch", "field", "phrase"),
    [({"logprobs": True}, "logprobs", "how many alternatives"), ({"logprobs": 21}, "logprobs", "20"),
     ({"echo": True, "logprobs": 1}, "logprobs", "echo"), ({"suffix": "}"}, "suffix", "fill-in-the-middle"),
     ({"best_of": 3}, "best_of", "best_of"), ({"n": 9}, "n", "8"), ({"presence_penalty": 3}, "presence_penalty", "2")],
)
def test_completion_fields_lokal_cannot_honour_are_refused(patch: dict[str, object], field: str, phrase: str) -> None:
    message, param = refusal(CompletionRequest, {"model": "m", "prompt": "x", **patch})
    assert param == field and phrase in message
    ok = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": None, "suffix": "", "best_of": 1,
                                           "echo": True})
    assert ok.echo
