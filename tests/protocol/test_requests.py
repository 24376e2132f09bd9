from __future__ import annotations

import pytest
from pydantic import ValidationError

from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.completions import CompletionRequest

MSG = [{"role": "user", "content": "hi"}]


def test_chat_request_becomes_an_engine_request() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}, *MSG],
         "max_completion_tokens": 9, "stop": "END", "seed": 3, "ignore_eos": True,
         "response_format": {"type": "json_object"}, "user": "ignored-field"}
    )
    req = body.to_engine(body.requested_max_tokens)
    assert req.max_tokens == 9 and req.stop == ("END",) and req.seed == 3
    assert req.ignore_eos and req.json_mode
    assert req.messages is not None and req.messages[0].role == "system" and req.messages[0].content == "be brief"


@pytest.mark.parametrize(
    "patch",
    [{"messages": []}, {"max_tokens": 0}, {"max_tokens": 10**9}, {"temperature": -1}, {"top_p": 0},
     {"stop": ["a", "b", "c", "d", "e"]}, {"n": 2}, {"response_format": {"type": "xml"}},
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}],
)
def test_invalid_chat_requests_are_refused(patch: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **patch})


def test_completion_request_takes_one_prompt() -> None:
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["x"]}).prompt_text == "x"
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": ["x", "y"]})


@pytest.mark.parametrize(
    ("patch", "field", "phrase"),
    [
        ({"max_completion_tokens": 0}, "max_completion_tokens", "positive integer"),
        ({"max_completion_tokens": -5}, "max_completion_tokens", "positive integer"),
        ({"max_completion_tokens": 10**9}, "max_completion_tokens", "absurd"),
        ({"n": 2}, "n", "only n=1"),
        ({"n": 0}, "n", "only n=1"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool calling"),
        ({"tool_choice": "required"}, "tool_choice", "tool calling"),
        ({"functions": [{"name": "f"}]}, "functions", "tool calling"),
        ({"logprobs": True}, "logprobs", "log probabilities"),
        ({"top_logprobs": 2}, "top_logprobs", "log probabilities"),
        ({"presence_penalty": 0.5}, "presence_penalty", "penalties"),
        ({"frequency_penalty": -1}, "frequency_penalty", "penalties"),
        ({"repeat_penalty": 1.3}, "repeat_penalty", "penalties"),
        ({"logit_bias": {"50256": -100}}, "logit_bias", "logit_bias"),
        ({"top_k": 5}, "top_k", "top_k"),
        ({"modalities": ["text", "audio"]}, "modalities", "text only"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format", "json_schema"),
        ({"seed": 2**64}, "seed", ""),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]}, "messages.0.tool_calls", "tool calling"),
    ],
)
def test_fields_lokal_cannot_honour_are_refused_by_name(patch: dict[str, object], field: str, phrase: str) -> None:
    from lokal.server.body import validation_message

    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **patch})
    message, param = validation_message(err.value)
    assert param == field and message.startswith(f"{field}: ") and phrase in message


def test_neutral_values_clients_send_by_default_pass() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MSG, "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False,
         "top_logprobs": 0, "tools": [], "tool_choice": "none", "logit_bias": {}, "modalities": ["text"],
         "temperature": None, "top_p": None, "n": None, "user": "u", "metadata": {"a": "b"}, "store": False,
         "parallel_tool_calls": True, "seed": -(2**63), "top_k": 40, "repeat_penalty": 1.0}
    )
    assert body.temperature == 0.8 and body.top_p == 0.95  # null means the default, as in OpenAI's schema
    assert body.to_engine(5).seed == -(2**63)


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"logprobs": 0}, "logprobs"), ({"logprobs": 3}, "logprobs"), ({"suffix": "}"}, "suffix"),
     ({"best_of": 3}, "best_of"), ({"n": 3}, "n"), ({"presence_penalty": 1}, "presence_penalty")],
)
def test_completion_fields_lokal_cannot_honour_are_refused(patch: dict[str, object], field: str) -> None:
    from lokal.server.body import validation_message

    with pytest.raises(ValidationError) as err:
        CompletionRequest.model_validate({"model": "m", "prompt": "x", **patch})
    assert validation_message(err.value)[1] == field
    ok = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": None, "suffix": "", "best_of": 1,
                                           "echo": True})
    assert ok.echo
