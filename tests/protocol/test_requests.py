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
