"""The answer a bench report leads with: which model meets the SLO, at what throughput and memory, and why.

"Best" is stated, never implied: with an SLO it is the model with the most goodput (good requests per second)
among those whose SLO held; without one, the most aggregate output tokens per second among models that
completed every request. Synthetic models can win on speed (their speed is real for their shape), but the
verdict says so in the same sentence, because their text is noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from lokal.bench.result import BenchResult, ModelResult, StepResult


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    model: ModelResult
    step: StepResult | None
    eligible: bool  # could be "best" under the stated rule
    why: str  # one clause: met the SLO / missed it on ... / failed: ...

    @property
    def throughput(self) -> float | None:
        return self.step.summary.output_throughput if self.step else None

    @property
    def n(self) -> int:
        return self.step.summary.success if self.step else 0

    @property
    def memory_mib(self) -> float | None:
        s = self.model.server
        return s.memory_bytes / 2**20 if s is not None and s.memory_bytes else None


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str  # what "best" means in this run
    best: ModelVerdict | None
    models: list[ModelVerdict]
    headline: str  # the one sentence a decision-maker reads

    @property
    def synthetic_note(self) -> str | None:
        names = [v.model.name for v in self.models if v.model.synthetic]
        if not names:
            return None
        return (
            f"SYNTHETIC: {', '.join(names)} {'has' if len(names) == 1 else 'have'} random weights with a real "
            "model's shape: the speed and memory are real for that shape, the text is noise, and it is not "
            "the model its name suggests."
        )


def _slo_text(result: BenchResult) -> str | None:
    slo = result.config.get("slo")
    if not slo:
        return None
    parts = [
        f"{label} ≤ {slo[key] * 1000:g} ms"
        for key, label in (("ttft_s", "TTFT"), ("itl_s", "TPOT"), ("e2e_s", "E2E"))
        if slo.get(key) is not None
    ]
    return f"{' and '.join(parts)} for {slo.get('attainment', 0.9) * 100:g}% of requests"


def _missed(step: StepResult, result: BenchResult) -> str:
    slo = result.config.get("slo") or {}
    sm = step.summary
    misses = []
    for key, metric, label, stat in (
        ("ttft_s", "ttft_s", "TTFT", "p95"),
        ("itl_s", "tpot_s", "TPOT", "p95"),
        ("e2e_s", "e2e_s", "E2E", "p95"),
    ):
        bound, st = slo.get(key), sm.stat(metric)
        if bound is not None and st is not None and getattr(st, stat) > bound:
            misses.append(f"{label} p95 {getattr(st, stat) * 1000:.0f} ms > {bound * 1000:g} ms")
    att = sm.slo_attainment
    reason = f"{att * 100:.0f}% of requests met the SLO" if att is not None else "the SLO did not hold"
    return f"missed the SLO ({reason}{': ' + ', '.join(misses) if misses else ''})"


def _judge(m: ModelResult, result: BenchResult, slo_set: bool) -> ModelVerdict:
    step = m.main_step
    if m.status == "failed" or step is None:
        return ModelVerdict(m, step, False, f"failed: {m.error or 'no request completed'}")
    sm = step.summary
    if slo_set:
        if m.best_step is None and len(m.steps) > 1:  # a sweep where no level held
            return ModelVerdict(m, step, False, _missed(m.steps[0], result) + " at every load level")
        if step.slo_ok:
            att = sm.slo_attainment or 0.0
            return ModelVerdict(m, step, True, f"met the SLO at {step.pattern.label} ({att * 100:.0f}% good)")
        return ModelVerdict(m, step, False, _missed(step, result))
    if m.status == "partial" or sm.errors:
        return ModelVerdict(m, step, False, f"{sm.errors} of {sm.requests} requests failed")
    return ModelVerdict(m, step, True, f"completed all {sm.requests} requests at {step.pattern.label}")


def verdict(result: BenchResult) -> Verdict:
    slo = _slo_text(result)
    models = [_judge(m, result, slo is not None) for m in result.models]
    if slo is not None:
        rule = f"best = most goodput (good requests/s) among models that met the SLO ({slo})"
        key = _goodput
    else:
        rule = "best = most aggregate output tokens/s among models that completed every request (no SLO was set)"
        key = _throughput
    eligible = [v for v in models if v.eligible]
    best = max(eligible, key=key) if eligible else None
    return Verdict(rule, best, models, _headline(best, models, slo))


def _goodput(v: ModelVerdict) -> float:
    return (v.step.summary.goodput or 0.0) if v.step else 0.0


def _throughput(v: ModelVerdict) -> float:
    return v.throughput or 0.0


def figures(v: ModelVerdict) -> str:
    """'81.2 output tok/s, 412 MiB, n=24'."""
    parts = [f"{v.throughput:.1f} output tok/s" if v.throughput is not None else "no throughput"]
    if v.memory_mib is not None:
        parts.append(f"{v.memory_mib:.0f} MiB")
    parts.append(f"n={v.n}")
    return ", ".join(parts)


def describe(v: ModelVerdict) -> str:
    """'qwen [SYNTHETIC]: 81.2 output tok/s, 412 MiB, n=24 - met the SLO at sequential (100% good)'."""
    return f"{v.model.label}: {figures(v)} - {v.why}"


def _headline(best: ModelVerdict | None, models: list[ModelVerdict], slo: str | None) -> str:
    if best is None:
        if slo is not None:
            return f"No model met the SLO ({slo})."
        return "No model completed every request; see the errors below."
    what = "meets the SLO with the most goodput" if slo is not None else "has the highest throughput"
    others = [v for v in models if v is not best]
    tail = ""
    if len(others) == 1:
        tail = f"; {others[0].model.label} {others[0].why}"
    elif others:
        tail = f"; {sum(v.eligible for v in others)} of {len(others)} others were eligible"
    return f"{best.model.label} {what}: {figures(best)}{tail}."
