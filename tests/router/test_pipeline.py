from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lokal.router.cache import ResponseCache
from lokal.router.catalog import CatalogStore, load_catalog
from lokal.router.engine import IntentEngine
from lokal.router.pipeline import Pipeline, parse_plan
from lokal.router.router import Router
from lokal.router.session import RouterSession
from lokal.router.trace import TraceWriter, read_trace, simulate_costs
from tests.router.fakes import FakeOpenAI

TASK = "Speed up our slow CSV import script and explain the gains to the team"


@pytest.mark.parametrize(
    "text",
    [
        "1. Profile the script\n2. Refactor the parsing loop\n3. Summarize the gains",
        "Here is the plan:\n1) Profile the script\n2) Refactor the parsing loop\n3) Summarize the gains",
        "- Profile the script\n- Refactor the parsing loop\n* Summarize the gains",
        "**Step 1:** Profile the script\n**Step 2:** Refactor the parsing loop\n**Step 3:** Summarize the gains",
        "Steps:\n1. Profile the\n   script\n2. Refactor the parsing loop\n3. Summarize the gains\n",
        "• Profile the script\n• Refactor the parsing loop\n• Summarize the gains\n• Summarize the gains",
    ],
)
def test_plans_parse_from_the_usual_list_styles(text: str) -> None:
    assert parse_plan(text, "task") == ["Profile the script", "Refactor the parsing loop", "Summarize the gains"]


def test_without_a_list_the_whole_task_is_the_only_step_and_long_plans_are_capped() -> None:
    assert parse_plan("Sure! I would start by looking at it.", "the task") == ["the task"]
    assert parse_plan("", "the task") == ["the task"]
    assert parse_plan("1. First\n   - detail a\n   - detail b\n2. Second", "t") == [
        "First; detail a; detail b",
        "Second",
    ]
    many = "\n".join(f"{i}. step number {i}" for i in range(1, 10))
    assert parse_plan(many, "t", max_steps=3) == ["step number 1", "step number 2", "step number 3"]


def _scripted(messages: list[dict[str, Any]]) -> str:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if system.startswith("You plan work"):
        return "1. Write a Python function that parses the CSV faster\n2. Summarize the performance gains"
    if system.startswith("Combine the results"):
        return "FINAL: faster parser, 3x speed-up"
    return f"[small] {messages[-1]['content']}"


@pytest.fixture
def pipeline_router(
    tmp_path: Path, fake_server: Callable[..., FakeOpenAI], write_catalog: Callable[[Path, dict[str, Any]], Path]
) -> Iterator[tuple[RouterSession, FakeOpenAI, Path]]:
    local = fake_server(replies={"small": _scripted})
    path = write_catalog(
        tmp_path / "router.yaml",
        {
            "models": {
                "small": {"capabilities": ["general", "summarize"], "priority": 1, "cost_per_1m": 0.2},
                "coder": {"capabilities": ["code", "refactor"], "priority": 1, "cost_per_1m": 1.0},
            },
            "policy": {"detector": "rules"},
        },
    )
    trace = tmp_path / "trace.jsonl"
    r = RouterSession(
        Router(
            CatalogStore(path),
            local_base_url=local.base_url,
            intents=IntentEngine(None),
            trace=TraceWriter(trace),
            cache=ResponseCache(),
        )
    )
    yield r, local, trace
    r.close()


def test_pipeline_plans_routes_each_step_and_refines(pipeline_router: tuple[RouterSession, FakeOpenAI, Path]) -> None:
    router, local, trace = pipeline_router
    events = [e for e in Pipeline(router).run(TASK, "t1") if e.phase != "delta"]
    assert [e.phase for e in events] == ["plan", "step", "step", "refine", "done"]
    steps = [e for e in events if e.phase == "step"]
    assert steps[0].result is not None and steps[0].result.model == "coder"
    assert steps[1].result is not None and steps[1].result.model == "small"
    assert steps[1].result.decision.intent == "summarize"
    assert events[-1].text == "FINAL: faster parser, 3x speed-up"
    assert local.models_called() == ["small", "coder", "small", "small"]
    # The refine call sees every step's result.
    refine_prompt = local.calls[-1]["body"]["messages"][-1]["content"]
    assert "[coder] Write a Python function" in refine_prompt and TASK in refine_prompt
    evs = read_trace(trace)
    assert [(e["kind"], e["step"]) for e in evs] == [("plan", 0), ("step", 1), ("step", 2), ("refine", 3)]
    assert {e["trace_id"] for e in evs} == {"t1"}
    assert all(e["latency_ms"] > 0 and e["completion_tokens"] > 0 for e in evs)


def test_a_second_run_reuses_every_identical_step(pipeline_router: tuple[RouterSession, FakeOpenAI, Path]) -> None:
    router, local, trace = pipeline_router
    first = Pipeline(router).run_all(TASK)
    second = Pipeline(router).run_all(TASK)
    assert second.final == first.final and len(local.calls) == 4
    assert all(r.cache_hit for r in second.calls) and second.cost_usd == 0.0 and first.cost_usd > 0
    assert router.cache is not None and router.cache.stats().hits == 4


def test_cost_simulation_from_the_trace(
    pipeline_router: tuple[RouterSession, FakeOpenAI, Path], tmp_path: Path
) -> None:
    router, _, trace = pipeline_router
    res = Pipeline(router).run_all(TASK, "task-a")
    Pipeline(router).run_all(TASK, "task-b")  # all cache hits: free
    cat = load_catalog(tmp_path / "router.yaml")
    costs = {c.trace_id: c for c in simulate_costs(read_trace(trace), cat)}
    a, b = costs["task-a"], costs["task-b"]
    assert a.cost_usd == pytest.approx(res.cost_usd) and a.cost_usd > 0 and b.cost_usd == 0.0
    coder_tokens = sum(r.prompt_tokens + r.completion_tokens for r in res.calls if r.model == "coder")
    assert a.by_model["coder"] == pytest.approx(coder_tokens * 1.0 / 1e6)
    # All of task a's tokens on the pricier coder cost more than the routed mix, on the cheap model less.
    assert a.what_if["coder"] > a.cost_usd > a.what_if["small"]
    assert a.events == 4 and a.prompt_tokens == sum(r.prompt_tokens for r in res.calls)


def test_each_step_streams_its_text_as_it_is_generated(pipeline_router: tuple[RouterSession, FakeOpenAI, Path]) -> None:
    import time

    router, local, _ = pipeline_router
    local.itl_s = 0.03
    timed = [(time.perf_counter(), e) for e in Pipeline(router).run(TASK, "t2")]
    ends = {e.index or 0: (t, e) for t, e in timed if e.phase in ("plan", "step", "refine")}
    assert sorted(ends) == [0, 1, 2, 3]
    for index, (t_end, end) in ends.items():
        deltas = [(t, e) for t, e in timed if e.phase == "delta" and e.index == index]
        assert end.result is not None and len(deltas) >= 3
        assert "".join(e.text for _, e in deltas) == end.result.content  # the deltas add up to the answer
        assert all(e.stage == end.phase for _, e in deltas)
        assert all(t <= t_end for t, _ in deltas)  # and came before the call's result
        words = len(end.result.content.split(" "))
        assert deltas[-1][0] - deltas[0][0] >= 0.5 * (words - 1) * local.itl_s  # as written, not all at the end
    assert [e.phase for _, e in timed if e.phase != "delta"] == ["plan", "step", "step", "refine", "done"]
