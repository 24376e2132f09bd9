"""SLM vs LLM on the same prompts, the hybrid draft->refine pattern, a rubric quality lens, and costs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lokal.bench.client import BenchClient, RequestParams
from lokal.bench.config import BenchConfig, ModelEntry, default_endpoint
from lokal.bench.costs import CostView, LocalCost, PriceTable, combined, cost_of
from lokal.bench.metrics import RequestRecord
from lokal.bench.prompts import Prompt, load_prompts
from lokal.bench.result import ModelResult
from lokal.bench.runner import ProgressEvent, arun_bench

# (stage, done, total): "small", "large", "refine" or "judge", so a long comparison shows where it is.
CompareProgress = Callable[[str, int, int], None]

Role = Literal["small", "large", "hybrid"]
ROLES: tuple[Role, ...] = ("small", "large", "hybrid")
RUBRIC = ("coherence", "factuality", "concision")

DEFAULT_REFINE = (
    "Review the draft answer above for errors, gaps and verbosity. Reply with the corrected, final answer only."
)

JUDGE_PROMPT = """You grade answers. Rate the ANSWER to the QUESTION from 1 (poor) to 5 (excellent) on:
coherence (clear, well organised), factuality (correct, no invented facts), concision (no padding).
Reply with JSON only, like {{"coherence": 4, "factuality": 5, "concision": 3}}.

QUESTION:
{question}

ANSWER:
{answer}"""


@dataclass(frozen=True, slots=True)
class HybridPolicy:
    """When the large model refines the small model's draft. Any rule that fires sends it to refine."""

    prompt_chars_over: int | None = None  # long prompts are the hard ones
    draft_chars_under: int | None = None  # a near-empty draft is a failed draft
    topics: tuple[str, ...] = ()  # flagged words in the prompt (case-insensitive), e.g. medical, legal
    min_confidence: float | None = None  # the draft's mean token logprob must reach this
    refine_unknown_confidence: bool = False  # endpoint gave no logprobs: refine to be safe?
    instruction: str = DEFAULT_REFINE

    @property
    def needs_logprobs(self) -> bool:
        return self.min_confidence is not None

    def decide(self, prompt: Prompt, draft: RequestRecord, draft_text: str) -> str | None:
        """The reason to refine, or None to ship the draft."""
        if not draft.ok:
            return "draft failed"
        text = prompt.text.lower()
        for topic in self.topics:
            if topic.lower() in text:
                return f"topic:{topic}"
        if self.prompt_chars_over is not None and len(prompt.text) > self.prompt_chars_over:
            return f"prompt over {self.prompt_chars_over} chars"
        if self.draft_chars_under is not None and len(draft_text.strip()) < self.draft_chars_under:
            return f"draft under {self.draft_chars_under} chars"
        if self.min_confidence is not None:
            if draft.mean_logprob is None:
                return "confidence unknown" if self.refine_unknown_confidence else None
            if draft.mean_logprob < self.min_confidence:
                return f"low confidence ({draft.mean_logprob:.2f})"
        return None

    def refine_prompt(self, prompt: Prompt, draft_text: str) -> Prompt:
        messages = (
            *prompt.messages,
            {"role": "assistant", "content": draft_text},
            {"role": "user", "content": self.instruction},
        )
        return Prompt(id=f"{prompt.id}/refine", messages=messages, max_tokens=prompt.max_tokens)


@dataclass(slots=True)
class Scores:
    coherence: int | None = None
    factuality: int | None = None
    concision: int | None = None
    source: Literal["judge", "human"] = "judge"
    note: str = ""

    @property
    def mean(self) -> float | None:
        vals = [v for v in (self.coherence, self.factuality, self.concision) if v is not None]
        return sum(vals) / len(vals) if vals else None


def parse_scores(text: str) -> Scores:
    """Scores from a judge's reply: first JSON object, else "name: n" pairs; out-of-range values dropped."""
    found: dict[str, Any] = {}
    match = re.search(r"\{.*?\}", text, re.S)
    if match:
        try:
            obj = json.loads(match.group(0))
            if isinstance(obj, dict):
                found = {k.lower(): v for k, v in obj.items()}
        except ValueError:
            pass
    for name in RUBRIC:
        if name not in found:
            m = re.search(rf"{name}\W{{0,3}}(\d)", text, re.I)
            if m:
                found[name] = m.group(1)

    def score(name: str) -> int | None:
        try:
            v = int(found[name])
        except (KeyError, TypeError, ValueError):
            return None
        return v if 1 <= v <= 5 else None

    return Scores(score("coherence"), score("factuality"), score("concision"), source="judge")


@dataclass(slots=True)
class HybridRow:
    prompt_id: str
    refined: bool
    reason: str | None
    draft_s: float | None
    refine_s: float | None
    output: str
    draft: RequestRecord
    refine: RequestRecord | None = None

    @property
    def total_s(self) -> float | None:
        if self.draft_s is None:
            return None
        return self.draft_s + (self.refine_s or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "refined": self.refined,
            "reason": self.reason,
            "draft_s": self.draft_s,
            "refine_s": self.refine_s,
            "total_s": self.total_s,
            "output": self.output,
            "refine_request": self.refine.to_dict() if self.refine else None,
        }


@dataclass(slots=True)
class CompareRow:
    prompt: Prompt
    outputs: dict[str, str] = field(default_factory=dict)
    records: dict[str, RequestRecord] = field(default_factory=dict)
    scores: dict[str, Scores] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt.id,
            "prompt": self.prompt.text,
            "outputs": self.outputs,
            "latency_s": {k: r.e2e_s for k, r in self.records.items()},
            "completion_tokens": {k: r.completion_tokens for k, r in self.records.items()},
            "scores": {k: asdict(s) for k, s in self.scores.items()},
        }


@dataclass(slots=True)
class CompareConfig:
    small: ModelEntry
    large: ModelEntry
    endpoint: str = field(default_factory=default_endpoint)
    api_key: str | None = None
    prompts: list[Prompt] = field(default_factory=lambda: load_prompts(None))
    rounds: int = 1
    warmup_rounds: int = 1
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = 1234
    stream: bool = True
    request_timeout_s: float = 300.0
    hybrid: HybridPolicy | None = field(default_factory=HybridPolicy)
    judge: ModelEntry | None = None
    annotations: Path | None = None
    prices: PriceTable = field(default_factory=PriceTable)
    local: LocalCost = field(default_factory=LocalCost)

    def bench_config(self, entry: ModelEntry, *, logprobs: bool) -> BenchConfig:
        return BenchConfig(
            models=[entry],
            endpoint=self.endpoint,
            api_key=self.api_key,
            prompts=self.prompts,
            rounds=self.rounds,
            warmup_rounds=self.warmup_rounds,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            stream=self.stream,
            request_timeout_s=self.request_timeout_s,
            keep_outputs=True,
            logprobs=logprobs,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "small": self.small.model_dump(exclude_none=True),
            "large": self.large.model_dump(exclude_none=True),
            "endpoint": self.endpoint,
            "prompts": [p.id for p in self.prompts],
            "rounds": self.rounds,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "hybrid": asdict(self.hybrid) if self.hybrid else None,
            "judge": self.judge.name if self.judge else None,
            "annotations": str(self.annotations) if self.annotations else None,
            "prices": {k: v.model_dump() for k, v in self.prices.prices.items()},
            "local": asdict(self.local),
        }


@dataclass(slots=True)
class CompareResult:
    config: dict[str, Any]
    small: ModelResult
    large: ModelResult
    rows: list[CompareRow]
    hybrid: list[HybridRow] | None
    costs: dict[str, CostView]
    notes: list[str] = field(default_factory=list)  # what a reader must know to trust the figures

    def model(self, role: Role) -> ModelResult | None:
        return {"small": self.small, "large": self.large}.get(role)

    def quality(self) -> dict[str, dict[str, float | None]]:
        """Mean rubric score per role and criterion, over the prompts that have one."""
        out: dict[str, dict[str, float | None]] = {}
        for role in ROLES:
            per: dict[str, float | None] = {}
            for name in RUBRIC:
                vals = [getattr(r.scores[role], name) for r in self.rows if role in r.scores]
                vals = [v for v in vals if v is not None]
                per[name] = sum(vals) / len(vals) if vals else None
            out[role] = per
        return out

    @property
    def refine_rate(self) -> float | None:
        if not self.hybrid:
            return None
        return sum(h.refined for h in self.hybrid) / len(self.hybrid)

    def hybrid_latency(self) -> dict[str, float | None]:
        if not self.hybrid:
            return {}

        def mean(xs: list[float | None]) -> float | None:
            vals = [x for x in xs if x is not None]
            return sum(vals) / len(vals) if vals else None

        return {
            "draft_s": mean([h.draft_s for h in self.hybrid]),
            "refine_s_when_refined": mean([h.refine_s for h in self.hybrid if h.refined]),
            "blended_s": mean([h.total_s for h in self.hybrid]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "lokal.compare/1",
            "config": self.config,
            "models": {"small": self.small.to_dict(), "large": self.large.to_dict()},
            "rows": [r.to_dict() for r in self.rows],
            "hybrid": None
            if self.hybrid is None
            else {
                "refine_rate": self.refine_rate,
                "latency": self.hybrid_latency(),
                "rows": [h.to_dict() for h in self.hybrid],
            },
            "quality": self.quality(),
            "costs": {k: v.to_dict() for k, v in self.costs.items()},
            "notes": self.notes,
        }


def _first_round(m: ModelResult) -> dict[str, RequestRecord]:
    out: dict[str, RequestRecord] = {}
    for r in m.records:
        if r.round == 0:
            out.setdefault(r.prompt_id, r)
    return out


async def _judge(client: BenchClient, judge: str, question: str, answer: str, cfg: CompareConfig) -> Scores:
    prompt = Prompt("judge", ({"role": "user", "content": JUDGE_PROMPT.format(question=question, answer=answer)},))
    params = RequestParams(max_tokens=96, temperature=0.0, seed=cfg.seed, stream=cfg.stream)
    rec = await client.chat(judge, prompt, params, keep_output=True)
    if not rec.ok:
        return Scores(source="judge", note=f"judge failed: {rec.error}")
    return parse_scores(rec.output or "")


def load_annotations(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of annotations")
    return data


def _apply_annotations(rows: list[CompareRow], items: list[dict[str, Any]], names: dict[str, str]) -> int:
    """Human scores replace the judge's for the same prompt and role; returns how many were applied."""
    by_id = {r.prompt.id: r for r in rows}
    role_of = {v: k for k, v in names.items()} | {k: k for k in names}
    applied = 0
    for item in items:
        row = by_id.get(str(item.get("prompt_id")))
        role = role_of.get(str(item.get("model", item.get("role"))))
        if row is None or role is None:
            continue
        s = parse_scores(json.dumps({k: item.get(k) for k in RUBRIC if item.get(k) is not None}))
        if s.mean is None:
            continue  # template entry not filled in yet
        s.source, s.note = "human", str(item.get("note") or "")
        row.scores[role] = s
        applied += 1
    return applied


def annotation_template(result: CompareResult) -> list[dict[str, Any]]:
    """One entry per (prompt, role) with empty scores: a person fills them in, passes it to --annotations."""
    names = {"small": result.small.entry.name, "large": result.large.entry.name, "hybrid": "hybrid"}
    return [
        {
            "prompt_id": r.prompt.id,
            "model": role,
            "model_name": names[role],
            "prompt": r.prompt.text,
            "output": text,
            "coherence": None,
            "factuality": None,
            "concision": None,
            "note": "",
        }
        for r in result.rows
        for role, text in r.outputs.items()
    ]


def _relay(stage: str, on_progress: CompareProgress | None) -> Callable[[ProgressEvent], None] | None:
    if on_progress is None:
        return None
    return lambda ev: on_progress(stage, ev.completed, ev.total)


def confidence_note(policy: HybridPolicy | None, hybrid: list[HybridRow] | None, small: str) -> str | None:
    """Say so when the confidence rule could not be applied, instead of letting it silently never fire."""
    if policy is None or not policy.needs_logprobs or not hybrid:
        return None
    unknown = sum(1 for h in hybrid if h.draft.ok and h.draft.mean_logprob is None)
    if not unknown:
        return None
    outcome = (
        "they were refined (--refine-unknown-confidence)"
        if policy.refine_unknown_confidence
        else "the rule did not fire for them (pass --refine-unknown-confidence to refine them instead)"
    )
    return (
        f"confidence rule (--refine-below-logprob {policy.min_confidence:g}): the endpoint gave no logprobs for "
        f"{unknown} of {len(hybrid)} drafts from {small}, so {outcome}"
    )


async def arun_compare(cfg: CompareConfig, *, on_progress: CompareProgress | None = None) -> CompareResult:
    policy = cfg.hybrid
    small_cfg = cfg.bench_config(cfg.small, logprobs=bool(policy and policy.needs_logprobs))
    small = (await arun_bench(small_cfg, on_progress=_relay("small", on_progress))).models[0]
    large_cfg = cfg.bench_config(cfg.large, logprobs=False)
    large = (await arun_bench(large_cfg, on_progress=_relay("large", on_progress))).models[0]
    s_first, l_first = _first_round(small), _first_round(large)
    rows: list[CompareRow] = []
    for p in cfg.prompts:
        row = CompareRow(prompt=p)
        for role, recs in (("small", s_first), ("large", l_first)):
            rec = recs.get(p.id)
            if rec is not None:
                row.records[role] = rec
                row.outputs[role] = rec.output or ""
        rows.append(row)

    large_endpoint = cfg.large.endpoint or cfg.endpoint
    hybrid: list[HybridRow] | None = None
    async with BenchClient(large_endpoint, cfg.large.api_key(cfg.api_key), timeout_s=cfg.request_timeout_s) as lc:
        if policy is not None:
            hybrid = []
            params = RequestParams(
                max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed, stream=cfg.stream
            )
            for i, row in enumerate(rows):
                if on_progress is not None:
                    on_progress("refine", i, len(rows))
                draft = row.records.get("small")
                if draft is None:
                    continue
                draft_text = row.outputs.get("small", "")
                reason = policy.decide(row.prompt, draft, draft_text)
                refine = None
                output = draft_text
                if reason is not None and large.status != "failed":
                    refine = await lc.chat(
                        cfg.large.name, policy.refine_prompt(row.prompt, draft_text), params, keep_output=True
                    )
                    output = refine.output if refine.ok and refine.output else draft_text
                hybrid.append(
                    HybridRow(
                        prompt_id=row.prompt.id,
                        refined=refine is not None and refine.ok,
                        reason=reason,
                        draft_s=draft.e2e_s if draft.ok else None,
                        refine_s=refine.e2e_s if refine else None,
                        output=output,
                        draft=draft,
                        refine=refine,
                    )
                )
                row.outputs["hybrid"] = output

    if cfg.judge is not None:
        judge = cfg.judge
        async with BenchClient(
            judge.endpoint or cfg.endpoint, judge.api_key(cfg.api_key), timeout_s=cfg.request_timeout_s
        ) as jc:
            for i, row in enumerate(rows):
                if on_progress is not None:
                    on_progress("judge", i, len(rows))
                for role, text in row.outputs.items():
                    if text.strip():
                        row.scores[role] = await _judge(jc, judge.name, row.prompt.text, text, cfg)
    if cfg.annotations is not None:
        names = {"small": cfg.small.name, "large": cfg.large.name, "hybrid": "hybrid"}
        _apply_annotations(rows, load_annotations(cfg.annotations), names)

    costs = {
        "small": cost_of(small.records, cfg.small.price or cfg.prices.get(cfg.small.name), cfg.local),
        "large": cost_of(large.records, cfg.large.price or cfg.prices.get(cfg.large.name), cfg.local),
    }
    if hybrid:
        drafts = cost_of([h.draft for h in hybrid], cfg.small.price or cfg.prices.get(cfg.small.name), cfg.local)
        refines = cost_of(
            [h.refine for h in hybrid if h.refine is not None],
            cfg.large.price or cfg.prices.get(cfg.large.name),
            cfg.local,
        )
        costs["hybrid"] = combined([drafts, refines], requests=len(hybrid))
    notes = [n for n in (confidence_note(policy, hybrid, cfg.small.name),) if n]
    return CompareResult(cfg.to_dict(), small, large, rows, hybrid, costs, notes)


def run_compare(cfg: CompareConfig, *, on_progress: CompareProgress | None = None) -> CompareResult:
    return asyncio.run(arun_compare(cfg, on_progress=on_progress))
