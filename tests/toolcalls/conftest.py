"""Shared tools for the tool-calling tests."""

from __future__ import annotations

from typing import Any

import pytest

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name", "maxLength": 12},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ADD: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def tools() -> list[dict[str, Any]]:
    return [WEATHER, ADD]


@pytest.fixture(scope="session")
def tiny_llm(tiny_gguf: Any) -> Any:
    """llama.cpp itself on the tiny GGUF, for constrained generations that prove a grammar's output."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=2048, n_threads=1, verbose=False)
    yield llm
    llm.close()


def generate(llm: Any, grammar: str, *, seed: int, max_tokens: int = 400) -> tuple[str, str]:
    """(text, finish_reason) of a grammar-constrained completion on the tiny model."""
    from llama_cpp.llama_grammar import LlamaGrammar

    out = llm.create_completion(
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
        max_tokens=max_tokens,
        temperature=0.8,
        seed=seed,
        grammar=LlamaGrammar.from_string(grammar, verbose=False),
    )
    choice = out["choices"][0]
    return choice["text"], choice["finish_reason"]


def grammar_compiles(llm: Any, grammar: str) -> bool:
    """llama.cpp's parser, bound to the model's vocabulary as an engine would bind it."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True
