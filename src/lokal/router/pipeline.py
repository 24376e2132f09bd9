"""Plan -> solve -> refine: a general model writes steps, each step goes to its routed model, a summarizing
model condenses the results. Progress is yielded as events so a CLI or UI can show each step as it ends."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lokal.router.router import AUTO, RoutedResult, Router

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
    phase: str  # "plan" | "step" | "refine" | "done"
    index: int | None = None  # step number, from 1
    total: int | None = None
    text: str = ""  # the step, or the final answer
    result: RoutedResult | None = None


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
        router: Router,
        *,
        max_steps: int = 5,
        params: Mapping[str, Any] | None = None,
        router_name: str = AUTO,
    ) -> None:
        self.router = router
        self.max_steps = max_steps
        # Deterministic by default so that identical sub-steps are served from the cache.
        self.params = {"temperature": 0.0, "max_tokens": 512, **dict(params or {})}
        self.router_name = router_name

    def run(self, task: str, trace_id: str | None = None) -> Iterator[PipelineEvent]:
        trace_id = trace_id or uuid.uuid4().hex[:16]
        plan = self.router.complete(
            [
                {"role": "system", "content": PLAN_SYSTEM.format(n=self.max_steps)},
                {"role": "user", "content": task},
            ],
            router=self.router_name,
            params=self.params,
            intent="general",
            kind="plan",
            step=0,
            trace_id=trace_id,
        )
        steps = parse_plan(plan.content, task, self.max_steps)
        yield PipelineEvent("plan", 0, len(steps), "\n".join(steps), plan)
        outputs: list[RoutedResult] = []
        for i, step in enumerate(steps, start=1):
            out = self.router.complete(
                [
                    {"role": "system", "content": STEP_SYSTEM.format(task=task)},
                    {"role": "user", "content": step},
                ],
                router=self.router_name,
                params=self.params,
                kind="step",
                step=i,
                trace_id=trace_id,
            )
            outputs.append(out)
            yield PipelineEvent("step", i, len(steps), step, out)
        body = "\n\n".join(
            f"Step {i}: {s}\nResult: {o.content.strip()}"
            for i, (s, o) in enumerate(zip(steps, outputs, strict=True), start=1)
        )
        refine = self.router.complete(
            [
                {"role": "system", "content": REFINE_SYSTEM},
                {"role": "user", "content": f"Task: {task}\n\n{body}"},
            ],
            router=self.router_name,
            params=self.params,
            intent="summarize",
            kind="refine",
            step=len(steps) + 1,
            trace_id=trace_id,
        )
        yield PipelineEvent("refine", len(steps) + 1, len(steps), refine.content, refine)
        yield PipelineEvent("done", None, len(steps), refine.content, refine)

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
