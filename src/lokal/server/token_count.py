"""Token counts with a model's own tokenizer, through its chat template, outside a generation.

`/v1/messages/count_tokens` must give what the answer's usage.input_tokens would say, so it counts the very
engine request serving would send (messages, tools). Counting runs on the model's worker thread, like every
engine call (the tokenizer is not thread-safe, and a long prompt would stall the event loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from lokal.engines.base import Engine, GenerationRequest
from lokal.errors import InvalidRequest
from lokal.protocol.chat import ChatCompletionRequest
from lokal.runtime.manager import ModelManager

T = TypeVar("T")


async def _on_worker(manager: ModelManager, model: str, fn: Callable[[Engine], T]) -> T:
    spec, _ = manager.resolve(model)
    if spec.task != "chat-completion":
        raise InvalidRequest(f"{spec.alias} is an {spec.task} model and does not chat", param="model")
    lm = await manager.get(model)
    lm.active += 1  # a model being counted on is not evicted under the call
    try:
        result: T = await lm.worker.call(lambda: fn(lm.engine))
        return result
    finally:
        lm.active -= 1
        lm.touch()


async def prompt_tokens(manager: ModelManager, body: ChatCompletionRequest) -> int:
    """The prompt's tokens as the engine reads them: the chat template with the tools, the BOS token."""
    req = body.to_engine(None)
    return await _on_worker(manager, body.model, lambda engine: engine.count_tokens(req))


async def prompt_and_text_tokens(manager: ModelManager, body: ChatCompletionRequest, text: str) -> tuple[int, int]:
    """The prompt's tokens and those of `text` (an answer cut short, whose own usage never came), in one call."""
    req = body.to_engine(None)

    def count(engine: Engine) -> tuple[int, int]:
        # A raw prompt gets the BOS token the tokenizer adds; the empty prompt's count takes it off again.
        bare = engine.count_tokens(GenerationRequest(prompt=""))
        return engine.count_tokens(req), max(0, engine.count_tokens(GenerationRequest(prompt=text)) - bare)

    return await _on_worker(manager, body.model, count)


__all__ = ["prompt_and_text_tokens", "prompt_tokens"]
