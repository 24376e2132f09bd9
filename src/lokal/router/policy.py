"""Choosing models for one request: capability, then priority, then residency, then cost; escalation; the
fallback chain; failing and over-budget models pushed back. Pure functions over a catalog snapshot."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from lokal.router.catalog import Escalation, Preset, RouterCatalog
from lokal.router.intents import GENERAL, IntentResult


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str  # catalog name
    upstream_model: str  # the name its endpoint knows
    endpoint: str | None  # base URL; None = the local lokal server
    endpoint_name: str
    role: str  # "primary" | "escalation" | "alternative" | "fallback"


@dataclass(frozen=True, slots=True)
class RouteDecision:
    router: str  # "auto" or a preset name
    intent: str
    confidence: float
    method: str  # how the intent was found: rules | semantic | combined | preset | forced
    escalated: bool
    reason: str  # one line a person can read
    candidates: tuple[Candidate, ...]  # in the order to try
    prompt_tokens_est: int
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def primary(self) -> Candidate:
        return self.candidates[0]


@dataclass(frozen=True, slots=True)
class Health:
    resident: frozenset[str] = frozenset()
    cooling: Mapping[str, float] = field(default_factory=dict)  # model -> seconds left
    over_budget: Mapping[str, str] = field(default_factory=dict)  # model -> which budget


def escalation_reasons(esc: Escalation, prompt: str, tokens: int, intent: IntentResult) -> list[str]:
    if not esc.enabled:
        return []
    why = []
    if tokens > esc.long_prompt_tokens:
        why.append(f"long prompt (~{tokens} tokens > {esc.long_prompt_tokens})")
    for pat in esc.topics:
        m = re.search(pat, prompt, re.IGNORECASE)
        if m:
            why.append(f"flagged topic {m.group(0).strip()!r}")
            break
    if intent.method not in ("forced", "preset") and intent.confidence < esc.min_confidence:
        why.append(f"low intent confidence {intent.confidence:.2f} < {esc.min_confidence:g}")
    return why


def rank(
    catalog: RouterCatalog,
    intent: str,
    *,
    health: Health,
    needed_context: int,
    preset: Preset | None,
    escalate: bool,
) -> tuple[list[tuple[str, str]], list[str]]:
    """Ordered (model, role) pairs and notes on what shaped the order."""
    notes: list[str] = []
    pool = [
        n
        for n in catalog.models
        if (preset is None or preset.models is None or n in preset.models)
        and (preset is None or not preset.local_only or catalog.is_local(n))
    ]
    fits = [n for n in pool if catalog.models[n].max_context >= needed_context]
    if fits:
        if len(fits) < len(pool):
            notes.append(f"context: {len(pool) - len(fits)} model(s) too small for ~{needed_context} tokens")
        pool = fits
    else:
        notes.append(f"no model's context fits ~{needed_context} tokens; trying anyway")
    capable = [n for n in pool if intent in catalog.models[n].capabilities]
    if not capable and intent != GENERAL:
        capable = [n for n in pool if GENERAL in catalog.models[n].capabilities]
        notes.append(f"no model declares {intent!r}; using general models")
    if not capable:
        capable = list(pool)
    prefer = set(preset.prefer) if preset else set()

    def key(n: str) -> tuple[bool, int, bool, float, str]:
        e = catalog.models[n]
        return (not (prefer & set(e.capabilities)), e.priority, n not in health.resident, e.cost_per_1m, n)

    ordered = sorted(capable, key=key)
    roles: dict[str, str] = {}
    if escalate and ordered:
        base_tier = catalog.models[ordered[0]].tier
        explicit = [n for n in catalog.policy.escalation.to if n in pool]
        larger = sorted(
            (n for n in pool if catalog.models[n].tier > base_tier),
            key=lambda n: (-catalog.models[n].tier, *key(n)),
        )
        targets = list(dict.fromkeys([*explicit, *larger]))
        if targets:
            roles.update({n: "escalation" for n in targets})
            ordered = list(dict.fromkeys([*targets, *ordered]))
        else:
            notes.append("escalation wanted but no larger model is available")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    pool_set = set(pool)

    def add(n: str, role: str) -> None:
        if n in seen or n not in pool_set:
            return
        seen.add(n)
        out.append((n, role))
        for fb in catalog.models[n].fallbacks:
            add(fb, "fallback")

    for i, n in enumerate(ordered):
        add(n, "primary" if i == 0 and n not in roles else roles.get(n, "alternative"))
    # Last resort: a generalist's answer beats an error when every specialist is down.
    for n in sorted((n for n in pool if GENERAL in catalog.models[n].capabilities), key=key):
        add(n, "alternative")
    # Over budget: never spend. Cooling down: only once everything healthy has been tried.
    spent = [n for n, _ in out if n in health.over_budget]
    if spent:
        notes.append("over budget: " + ", ".join(f"{n} ({health.over_budget[n]})" for n in spent))
        out = [(n, r) for n, r in out if n not in health.over_budget]
    cooling = [p for p in out if p[0] in health.cooling]
    if cooling:
        notes.append("cooling down: " + ", ".join(f"{n} ({health.cooling[n]:.0f}s)" for n, _ in cooling))
        out = [p for p in out if p[0] not in health.cooling] + cooling
    return out, notes
