"""The typed response bodies read back through the openai SDK's own types, with the fields OpenAI leaves out
left out; as_dict reads every form an Outcome carries."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion as SDKCompletion
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion as SDKChatCompletion

from lokal.engines.base import TokenLogprob, TopLogprob
from lokal.errors import ContextLengthExceeded
from lokal.protocol import outputs as out
from lokal.protocol.common import as_dict
from lokal.protocol.logprobs import chat_logprobs, completion_logprobs, text_offsets

LP = [TokenLogprob("He", -0.5, (72, 101), (TopLogprob("He", -0.5, (72, 101)),)),
      TokenLogprob("llo", -1.5, (108, 108, 111), (TopLogprob("llo", -1.5, (108, 108, 111)),))]


def _chat(message: out.ChatMessage, finish: out.FinishReason = "stop") -> out.ChatCompletion:
    return out.ChatCompletion(
        id="chatcmpl-1", created=1, model="m", system_fingerprint="fp",
        choices=[out.ChatChoice(index=0, message=message, logprobs=chat_logprobs(LP), finish_reason=finish)],
        usage=out.Usage.of(3, 2),
    )


def test_chat_completion_with_text_and_logprobs() -> None:
    body = as_dict(_chat(out.ChatMessage(content="Hello")))
    assert "tool_calls" not in body["choices"][0]["message"] and "lokal_router" not in body
    sdk = SDKChatCompletion.model_validate(body)
    assert sdk.choices[0].message.content == "Hello" and sdk.usage is not None and sdk.usage.total_tokens == 5
    assert sdk.choices[0].logprobs is not None and sdk.choices[0].logprobs.content is not None
    assert [e.token for e in sdk.choices[0].logprobs.content] == ["He", "llo"]


def test_chat_completion_with_only_tool_calls_has_null_content() -> None:
    call = out.ToolCall(id="call_1", function=out.FunctionCall(name="get_weather", arguments='{"city": "Oslo"}'))
    body = as_dict(_chat(out.ChatMessage(content=None, tool_calls=[call]), "tool_calls"))
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}],
    }
    sdk = SDKChatCompletion.model_validate(body)
    assert sdk.choices[0].finish_reason == "tool_calls"
    assert sdk.choices[0].message.tool_calls and sdk.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_completion_legacy_logprobs() -> None:
    lp = completion_logprobs(LP, text_offsets(4, LP))
    body = as_dict(out.Completion(id="cmpl-1", created=1, model="m", usage=out.Usage.of(1, 2), choices=[
        out.CompletionChoice(index=0, text="Hello", logprobs=lp, finish_reason="length")]))
    sdk = SDKCompletion.model_validate(body)
    assert sdk.choices[0].logprobs is not None
    assert sdk.choices[0].logprobs.text_offset == [4, 6]
    assert sdk.choices[0].logprobs.top_logprobs == [{"He": -0.5}, {"llo": -1.5}]


def test_embeddings_and_model_cards() -> None:
    emb = out.EmbeddingList(data=[out.Embedding(index=0, embedding=[0.5, 0.25])], model="e",
                            usage=out.EmbeddingUsage(prompt_tokens=3, total_tokens=3))
    assert CreateEmbeddingResponse.model_validate(as_dict(emb)).data[0].embedding == [0.5, 0.25]
    card = out.ModelCard(id="tiny", owned_by="me", lokal=out.LokalRouterInfo())
    assert Model.model_validate(as_dict(card)).model_extra == {"lokal": {"router": True, "task": "chat-completion"}}
    assert "lokal" not in as_dict(out.ModelCard(id="auto", owned_by="lokal-router"))


def test_error_body_is_the_openai_error_shape() -> None:
    exc = ContextLengthExceeded("too long", param="messages")
    assert as_dict(out.ErrorBody.of(exc)) == exc.to_dict()


@pytest.mark.parametrize("form", ["model", "json", "bytes", "dict"])
def test_as_dict_reads_every_form_an_outcome_carries(form: str) -> None:
    usage = out.Usage.of(1, 1)
    value = {"model": usage, "json": usage.model_dump_json(), "bytes": usage.model_dump_json().encode(),
             "dict": json.loads(usage.model_dump_json())}[form]
    assert as_dict(value) == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
