"""Plan -> solve -> refine: a general model writes steps, each step goes to its routed model, a summarizing
model condenses the results. Progress is yielded as events: every call's text as it is generated ("delta"),
then the call's result as it ends, so a CLI or UI can show each step while it is written."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lokal.router.executor import RoutedRequest, RoutedResult
from lokal.router.router import AUTO
from lokal.router.session import RouterSession

PLAN_SYSTEM = (
    "You plan work for other assistants. Break the user's task into at most {n} short, ordered steps that "
    "can each be done on its own. Answer with a numbered list only, one step per line, no preamble."
)
STEP_SYSTEM = "You are doing one step of a larger task. The whole task: {task}\nDo only this step, concisely."
REFINE_SYSTEM = (
    "Combine the results of the steps below into one coherent, concise answer to the task. Do not mention the steps."
)

# "1. x", "1) x", "(1) x", "**1.** x", "Step 1: x", "**Step 1:** x", "- x", "* x", "• x".
_ITEM = re.compile(
    r"^\s*(?:(?:\*\*)?step\s*\d{1,2}\s*[:.)-]?(?:\*\*)?|(?:\*\*)?\(?\d{1,2}[.):](?:\*\*)?|[-*•+](?=\s))"
    r"\s*(?:\*\*)?\s*(?P<body>.+)$",
    re.IGNORECASE,
)
_HEADER = re.compile(r"^\s*(?:#+\s*)?(?:here(?:'s| is| are)\b.*|steps?|plan)\s*:?\s*$", re.IGNORECASE)


def parse_plan(text: str, task: str, max_steps: int = 5) -> list[str]:
    """Steps from a model's plan; numbered or bulleted lines, continuation lines joined to their item.
    Without a recognisable list, the whole task is the single step (small models often ignore formats)."""
    steps: list[str] = []
    base_indent: int | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or _HEADER.match(line):
            continue
        indent = len(line) - len(line.lstrip())
        m = _ITEM.match(line)
        if m and (base_indent is None or indent <= base_indent):
            base_indent = indent if base_indent is None else base_indent
            body = m.group("body").strip().strip("*").strip()
            if body:
                steps.append(body)
        elif steps and indent > (base_indent or 0):
            # Sub-bullets and wrapped lines belong to the step above them.
            sub = m.group("body").strip() if m else line.strip()
            steps[-1] = f"{steps[-1]}{'; ' if m else ' '}{sub}"
    cleaned = list(dict.fromkeys(s for s in (re.sub(r"\s+", " ", s).strip() for s in steps) if len(s) > 2))
    return cleaned[:max_steps] if cleaned else [task]


@dataclass(slots=True)
class PipelineEvent:
    phase: str  # "delta" | "plan" | "step" | "refine" | "done"
    index: int | None = None  # step number, from 1 (the plan is 0, the refine total + 1)
    total: int | None = None  # None while the plan is being written
    text: str = ""  # a delta's text, the step, or the final answer
    result: RoutedResult | None = None
    stage: str = ""  # deltas: the call they belong to, "plan" | "step" | "refine"


@dataclass(slots=True)
class PipelineResult:
    task: str
    trace_id: str
    steps: list[str]
    outputs: list[RoutedResult] = field(default_factory=list)
    plan: RoutedResult | None = None
    refine: RoutedResult | None = None
    final: str = ""

    @property
    def calls(self) -> list[RoutedResult]:
        return [r for r in (self.plan, *self.outputs, self.refine) if r is not None]

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.calls)


class Pipeline:
    def __init__(
        self,
        session: RouterSession,
        *,
        max_steps: int = 5,
        params: Mapping[str, Any] | None = None,
        router_name: str = AUTO,
    ) -> None:
        self.session = session
        self.max_steps = max_steps
        # Deterministic by default so that identical sub-steps are served from the cache.
        self.params = {"temperature": 0.0, "max_tokens": 512, **dict(params or {})}
        self.router_name = router_name

    async def _call(
        self, stage: str, index: int, total: int | None, system: str, user: str, trace_id: str, **kw: Any
    ) -> AsyncIterator[PipelineEvent]:
        """The deltas of one routed call as they arrive, then one event of ``stage`` with its result."""
        req = RoutedRequest(
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            self.params,
            router=self.router_name,
            kind=stage,
            step=index,
            trace_id=trace_id,
            **kw,
        )
        stream = await self.session.executor.stream(req)
        try:
            async for d in stream:
                if d.text:
                    yield PipelineEvent("delta", index, total, d.text, stage=stage)
        finally:
            await stream.aclose()
        assert stream.result is not None
        yield PipelineEvent(stage, index, total, stream.result.content, stream.result)

    async def events(self, task: str, trace_id: str | None = None) -> AsyncIterator[PipelineEvent]:
        trace_id = trace_id or uuid.uuid4().hex[:16]
        plan: RoutedResult | None = None
        system = PLAN_SYSTEM.format(n=self.max_steps)
        async for ev in self._call("plan", 0, None, system, task, trace_id, intent="general"):
            if ev.phase == "delta":
                yield ev
            else:
                plan = ev.result
        assert plan is not None
        steps = parse_plan(plan.content, task, self.max_steps)
        yield PipelineEvent("plan", 0, len(steps), "\n".join(steps), plan)
        outputs: list[RoutedResult] = []
        for i, step in enumerate(steps, start=1):
            async for ev in self._call("step", i, len(steps), STEP_SYSTEM.format(task=task), step, trace_id):
                if ev.result is not None:
                    outputs.append(ev.result)
                    ev.text = step
                yield ev
        body = "\n\n".join(
            f"Step {i}: {s}\nResult: {o.content.strip()}"
            for i, (s, o) in enumerate(zip(steps, outputs, strict=True), start=1)
        )
        refine: RoutedResult | None = None
        user = f"Task: {task}\n\n{body}"
        async for ev in self._call(
            "refine", len(steps) + 1, len(steps), REFINE_SYSTEM, user, trace_id, intent="summarize"
        ):
            if ev.result is not None:
                refine = ev.result
            yield ev
        assert refine is not None
        yield PipelineEvent("done", None, len(steps), refine.content, refine)

    def run(self, task: str, trace_id: str | None = None) -> Iterator[PipelineEvent]:
        return self.session.iterate(self.events(task, trace_id))

    def run_all(self, task: str, trace_id: str | None = None) -> PipelineResult:
        trace_id = trace_id or uuid.uuid4().hex[:16]
        res = PipelineResult(task, trace_id, [])
        for ev in self.run(task, trace_id):
            if ev.phase == "plan":
                res.plan, res.steps = ev.result, ev.text.split("\n")
            elif ev.phase == "step" and ev.result is not None:
                res.outputs.append(ev.result)
            elif ev.phase == "refine":
                res.refine, res.final = ev.result, ev.text
        return res
