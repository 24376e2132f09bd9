"""Streamed chunks: the per-token fast path writes exactly the bytes of model_dump_json of the typed chunk, and
every chunk reads back through the openai SDK's own types."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from lokal.engines.base import TokenLogprob, ToolCallDelta, TopLogprob
from lokal.protocol.chunks import ChatChunks, CompletionChunks, Template
from lokal.protocol.common import as_dict
from lokal.protocol.outputs import Usage

TEXTS = [
    "",
    "plain",
    ' "quoted" and \\backslashed\\ ',
    "line\nbreak\r\ttab\b\f",
    "".join(chr(c) for c in range(0x80)),  # every ASCII character, controls included
    "é ü ß — “curly” … \u2028\u2029 \ufeff",
    "漢字 かな 한국어 😀 🏳️‍🌈",
    "</script><!--",
    "\x7f\x1f\x00",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("index", [0, 3])
def test_chat_fast_path_is_byte_identical_to_the_typed_chunk(text: str, index: int) -> None:
    chunks = ChatChunks("chatcmpl-1", 1700000000, "tiny-cpu:1", "lokal-llamacpp-tiny-cpu:1")
    fast = chunks.text(index, text)
    assert fast == chunks.content(index, text).model_dump_json()
    assert json.loads(fast)["choices"][0]["delta"] == {"content": text}
    SDKChunk.model_validate_json(fast)


@pytest.mark.parametrize("text", TEXTS)
def test_completion_fast_path_is_byte_identical_to_the_typed_chunk(text: str) -> None:
    chunks = CompletionChunks("cmpl-1", 1700000000, "tiny-cpu:1", None)
    fast = chunks.text(1, text)
    assert fast == chunks.content(1, text).model_dump_json()
    choice = json.loads(fast)["choices"][0]
    assert (choice["index"], choice["text"], choice["finish_reason"]) == (1, text, None)
    finished = as_dict(chunks.finish(1, "stop"))
    assert SDKCompletion.model_validate(finished).choices[0].finish_reason == "stop"


def test_the_template_is_made_once_per_choice() -> None:
    chunks = ChatChunks("c", 1, "m", None)
    chunks.text(0, "a")
    chunks.text(0, "b")
    chunks.text(1, "c")
    assert len(chunks._text) == 2


def test_a_template_needs_its_sentinel() -> None:
    with pytest.raises(ValueError, match="sentinel"):
        Template(ChatChunks("c", 1, "m", None).content(0, "no sentinel here"))


def test_chat_chunk_shapes() -> None:
    chunks = ChatChunks("c", 1, "m", "fp")
    assert as_dict(chunks.role(0))["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert as_dict(chunks.finish(1, "tool_calls"))["choices"] == [
        {"index": 1, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    ]
    tail = as_dict(chunks.usage(Usage.of(5, 7)))
    assert tail["choices"] == [] and tail["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert "usage" not in as_dict(chunks.role(0))  # only the last chunk carries usage, as at OpenAI


def test_tool_call_pieces_name_the_call_once_then_carry_argument_text() -> None:
    chunks = ChatChunks("c", 1, "m", None)
    first = chunks.tool_calls(0, [ToolCallDelta(0, id="call_" + "a" * 24, name="get_weather")])
    rest = chunks.tool_calls(0, [ToolCallDelta(0, arguments='{"city": '), ToolCallDelta(1, id="call_b", name="f")])
    assert as_dict(first)["choices"][0]["delta"] == {"tool_calls": [
        {"index": 0, "id": "call_" + "a" * 24, "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]}
    assert as_dict(rest)["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "f", "arguments": ""}},
    ]
    for chunk in (first, rest):
        SDKChunk.model_validate(as_dict(chunk))


def test_logprobs_ride_on_content_chunks() -> None:
    top = (TopLogprob("hi", -0.25, (104, 105)), TopLogprob("ho", -2.0, (104, 111)))
    lp = TokenLogprob("hi", -0.25, (104, 105), top)
    chat = ChatChunks("c", 1, "m", None).content(0, "hi", [lp])
    sdk = SDKChunk.model_validate(as_dict(chat))
    assert sdk.choices[0].logprobs is not None and sdk.choices[0].logprobs.content is not None
    entry = sdk.choices[0].logprobs.content[0]
    assert (entry.token, entry.logprob, entry.bytes) == ("hi", -0.25, [104, 105])
    assert [t.token for t in entry.top_logprobs] == ["hi", "ho"]
    legacy = as_dict(CompletionChunks("c", 1, "m", None).content(0, "hi", [lp], [7]))["choices"][0]["logprobs"]
    assert legacy == {"tokens": ["hi"], "token_logprobs": [-0.25], "top_logprobs": [{"hi": -0.25, "ho": -2.0}],
                      "text_offset": [7]}
