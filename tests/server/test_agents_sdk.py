"""An agent built with the OpenAI Agents SDK (`openai-agents`), unchanged, calls a Python function through lokal.

The tiny model has random weights, so the first turn forces the call, and the arguments are an enum and an
integer (a free string from random weights runs on to max_tokens) (tool_choice="required"); the SDK then
resets tool_choice to auto, sends the function's result back as a tool message and the model answers in text.
What this proves is the contract the SDK depends on: a tool call whose arguments parse into the function's
signature, a tool-result turn that lokal accepts, and a final answer.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from tests.support.server import LokalServer

agents = pytest.importorskip("agents")


def test_an_agents_sdk_agent_calls_a_function_tool(lokal_server: LokalServer) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from agents.items import ToolCallItem, ToolCallOutputItem
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # traces go to OpenAI's servers; lokal keeps everything local
    calls: list[tuple[str, int]] = []

    @function_tool
    def lookup_population(city: Literal["Paris", "Lyon"], year: int) -> str:
        """How many people live in a city.

        Args:
            city: The city's name.
            year: The census year.
        """
        calls.append((city, year))
        return f"{city} had 12345 people in {year}."

    async def run() -> object:
        client = AsyncOpenAI(base_url=lokal_server.base_url, api_key="unused", max_retries=0)
        agent = Agent(
            name="census",
            instructions="Answer with the population tool.",
            model=OpenAIChatCompletionsModel(model="tiny", openai_client=client),
            model_settings=ModelSettings(tool_choice="required", max_tokens=160, temperature=0.0),
            tools=[lookup_population],
        )
        try:
            return await Runner.run(agent, "How many people live in Paris?", max_turns=3)
        finally:
            await client.close()

    result = asyncio.run(run())
    assert len(calls) == 1
    city, year = calls[0]
    assert city in ("Paris", "Lyon") and isinstance(year, int)
    items = result.new_items  # type: ignore[attr-defined]
    assert any(isinstance(i, ToolCallItem) for i in items)
    outputs = [i for i in items if isinstance(i, ToolCallOutputItem)]
    assert outputs and "12345" in str(outputs[0].output)
    assert isinstance(result.final_output, str)  # type: ignore[attr-defined]
