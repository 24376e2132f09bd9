"""The router's decisions: detect the intent, rank the catalog's models by policy, remember failures and
spending, account for each finished call in the trace. No network calls here: lokal.router.executor runs the
decision (cache, candidates, retries, fallbacks) against the backends.

Works for any OpenAI-compatible endpoints named in the catalog, lokal included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lokal.errors import InvalidRequest, LokalError, ModelNotFound
from lokal.router.backends import estimate_tokens
from lokal.router.cache import ResponseCache
from lokal.router.catalog import CatalogStore, RouterCatalog
from lokal.router.engine import IntentEngine
from lokal.router.health import BudgetLedger, Cooldowns
from lokal.router.intents import IntentResult
from lokal.router.policy import Candidate, Health, RouteDecision, escalation_reasons, rank
from lokal.router.residency import ResidencyProbe
from lokal.router.trace import TraceEvent, TraceWriter

AUTO = "auto"
PROMPT_IN_TRACE = 160


class NoRouteAvailable(LokalError):
    status_code = 503
    error_type = "server_error"
    code = "no_route"


def message_text(content: Any) -> str:
    """Plain text of an OpenAI message content: a string, or a list of parts of which text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return message_text(messages[-1].get("content")) if messages else ""


class Router:
    """``local_base_url`` is where the "local" endpoint lives (the lokal server, ``.../v1``). With None the
    caller serves local models itself (the server's "auto" model): local candidates carry no endpoint."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        local_base_url: str | None,
        intents: IntentEngine | None = None,
        resident: Callable[[RouterCatalog], set[str]] | None = None,
        trace: TraceWriter | None = None,
        cache: ResponseCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.local_base_url = local_base_url
        self.intents = intents or IntentEngine()
        self._probe: ResidencyProbe | None = None
        if resident is None:
            self._probe = ResidencyProbe()
            probe = self._probe
            resident = lambda cat: probe.resident(cat, local_base_url or "")  # noqa: E731
        self._resident = resident
        self.trace = trace
        self.cache = cache
        self.cooldowns = Cooldowns(clock)
        self.ledger = BudgetLedger(clock)

    @property
    def catalog(self) -> RouterCatalog:
        return self.store.get()

    def names(self) -> list[str]:
        return [AUTO, *self.catalog.presets]

    def detect(self, prompt: str, router: str = AUTO) -> IntentResult:
        cat = self.catalog
        preset = self._preset(cat, router)
        if preset is not None and preset.intent:
            return IntentResult(preset.intent, 1.0, "preset")
        return self.intents.detect(prompt, (preset.detector if preset else None) or cat.policy.detector)

    def _preset(self, cat: RouterCatalog, router: str) -> Any:
        if router == AUTO:
            return None
        if router not in cat.presets:
            raise ModelNotFound(f"no router named {router!r} (known: {', '.join([AUTO, *cat.presets])})")
        return cat.presets[router]

    def plan(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        router: str = AUTO,
        intent: str | None = None,
        max_tokens: int | None = None,
        trace_id: str | None = None,
    ) -> RouteDecision:
        if not messages:
            raise InvalidRequest("messages must not be empty", param="messages")
        cat = self.catalog
        preset = self._preset(cat, router)
        prompt = last_user_text(messages)
        found = IntentResult(intent, 1.0, "forced") if intent is not None else self.detect(prompt, router)
        tokens = estimate_tokens(" ".join(message_text(m.get("content")) for m in messages))
        want_escalation = preset is None or preset.escalation is not False
        why_up = escalation_reasons(cat.policy.escalation, prompt, tokens, found) if want_escalation else []
        try:
            resident = self._resident(cat)
        except Exception:  # residency is a preference; a broken probe must not stop routing
            resident = set()
        health = Health(frozenset(resident), self.cooldowns.cooling(), self.ledger.over_budget(cat))
        ranked, notes = rank(
            cat,
            found.intent,
            health=health,
            needed_context=tokens + (max_tokens or 0),
            preset=preset,
            escalate=bool(why_up),
        )
        if not ranked:
            raise NoRouteAvailable(f"no model can take this request ({'; '.join(notes) or 'empty pool'})")
        candidates = tuple(self._candidate(cat, n, role) for n, role in ranked)
        first = cat.models[candidates[0].model]
        parts = [
            f"intent {found.intent} ({found.method}, confidence {found.confidence:.2f})",
            f"-> {candidates[0].model} (priority {first.priority}"
            f"{', loaded' if candidates[0].model in resident else ''}, ${first.cost_per_1m:g}/1M)",
        ]
        if why_up:
            parts.append("escalated: " + ", ".join(why_up))
        parts.extend(notes)
        kwargs: dict[str, Any] = {"trace_id": trace_id} if trace_id else {}
        return RouteDecision(
            router=router,
            intent=found.intent,
            confidence=found.confidence,
            method=found.method,
            escalated=bool(why_up) and candidates[0].role == "escalation",
            reason="; ".join(parts),
            candidates=candidates,
            prompt_tokens_est=tokens,
            scores=dict(found.scores),
            **kwargs,
        )

    def _candidate(self, cat: RouterCatalog, name: str, role: str) -> Candidate:
        entry = cat.models[name]
        upstream = entry.upstream_model or name
        if cat.is_local(name):
            return Candidate(name, upstream, self.local_base_url, "local", role)
        return Candidate(name, upstream, cat.endpoints[entry.endpoint].base_url, entry.endpoint, role)

    def record(
        self,
        decision: RouteDecision,
        model_used: str | None,
        latency_ms: float,
        usage: tuple[int, int] | None,
        error: str | None,
        fallback_used: bool,
        cache_hit: bool,
        *,
        kind: str = "route",
        step: int | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        attempts: list[dict[str, Any]] | None = None,
    ) -> TraceEvent:
        """Account for one finished call (budget ledger, trace line). Cache hits cost nothing."""
        cat = self.catalog
        pt, ct = usage or (0, 0)
        cost = 0.0
        if model_used is not None and model_used in cat.models and not cache_hit:
            cost = cat.models[model_used].cost(pt, ct)
            self.ledger.add(model_used, pt + ct, cost)
        endpoint = None
        if model_used is not None:
            endpoint = next((c.endpoint_name for c in decision.candidates if c.model == model_used), None)
        event = TraceEvent(
            trace_id=decision.trace_id,
            kind=kind,
            step=step,
            router=decision.router,
            intent=decision.intent,
            confidence=decision.confidence,
            method=decision.method,
            model=model_used,
            endpoint=endpoint,
            latency_ms=latency_ms,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            cache_hit=cache_hit,
            fallback_used=fallback_used,
            escalated=decision.escalated,
            reason=decision.reason,
            attempts=list(attempts or []),
            error=error,
            prompt=last_user_text(messages)[:PROMPT_IN_TRACE] if messages else "",
        )
        if self.trace is not None:
            self.trace.write(event)
        return event

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
        if self.cache is not None:
            self.cache.close()
