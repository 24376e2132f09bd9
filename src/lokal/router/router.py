"""The router: detect the intent, pick models by policy, call them with retries and fallbacks; cache, trace.

Works against any OpenAI-compatible endpoints named in the catalog, lokal included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lokal.errors import InvalidRequest, LokalError, ModelNotFound
from lokal.router.cache import CachedResponse, ResponseCache, cache_key, is_deterministic
from lokal.router.catalog import CatalogStore, RouterCatalog
from lokal.router.engine import IntentEngine
from lokal.router.health import BudgetLedger, Cooldowns
from lokal.router.intents import IntentResult
from lokal.router.policy import Candidate, Health, RouteDecision, escalation_reasons, rank
from lokal.router.residency import ResidencyProbe
from lokal.router.trace import TraceEvent, TraceWriter
from lokal.router.upstream import CallFailed, ChatResult, UpstreamClients, estimate_tokens

AUTO = "auto"
LocalCall = Callable[[str, Sequence[Mapping[str, Any]], Mapping[str, Any], float], ChatResult]
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


@dataclass(slots=True)
class RoutedResult:
    content: str
    model: str
    decision: RouteDecision
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hit: bool
    fallback_used: bool
    attempts: list[dict[str, Any]] = field(default_factory=list)


class Router:
    """``local_base_url`` is where the "local" endpoint lives (the lokal server, ``.../v1``). With None the
    caller serves local models itself (the server's "auto" model): local candidates carry no endpoint and
    are called through ``local_call(model, messages, params, timeout_s) -> ChatResult``, which raises
    ``CallFailed`` on failure."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        local_base_url: str | None,
        intents: IntentEngine | None = None,
        resident: Callable[[RouterCatalog], set[str]] | None = None,
        trace: TraceWriter | None = None,
        cache: ResponseCache | None = None,
        clients: UpstreamClients | None = None,
        local_call: LocalCall | None = None,
        sleep: Callable[[float], None] = time.sleep,
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
        self.clients = clients or UpstreamClients()
        self.cooldowns = Cooldowns(clock)
        self.ledger = BudgetLedger(clock)
        self.local_call = local_call
        self._sleep = sleep

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

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        router: str = AUTO,
        params: Mapping[str, Any] | None = None,
        intent: str | None = None,
        kind: str = "route",
        step: int | None = None,
        trace_id: str | None = None,
    ) -> RoutedResult:
        params = dict(params or {})
        decision = self.plan(
            messages, router=router, intent=intent, max_tokens=params.get("max_tokens"), trace_id=trace_id
        )
        cat = self.catalog
        policy = cat.policy
        use_cache = (
            self.cache is not None
            and policy.cache.enabled
            and (not policy.cache.only_deterministic or is_deterministic(params))
        )
        attempts: list[dict[str, Any]] = []
        started = time.perf_counter()
        for i, cand in enumerate(decision.candidates):
            key = cache_key(f"{cand.upstream_model}@{cand.endpoint}", messages, params) if use_cache else ""
            if use_cache and self.cache is not None:
                hit = self.cache.get(key)
                if hit is not None:
                    return self._finish(
                        decision,
                        cand,
                        kind,
                        step,
                        started,
                        messages,
                        attempts,
                        i > 0,
                        ChatResult(hit.content, hit.prompt_tokens, hit.completion_tokens, "stop"),
                        cache_hit=True,
                    )
            result = self._call_with_retries(cat, cand, messages, params, attempts)
            if result is not None:
                if use_cache and self.cache is not None:
                    self.cache.put(
                        key,
                        CachedResponse(result.content, result.prompt_tokens, result.completion_tokens, cand.model),
                    )
                return self._finish(decision, cand, kind, step, started, messages, attempts, i > 0, result)
        latency = (time.perf_counter() - started) * 1000
        summary = "; ".join(f"{a['model']}: {a['error']}" for a in attempts if a.get("error"))
        self.record(
            decision,
            None,
            latency,
            None,
            summary,
            bool(attempts),
            False,
            kind=kind,
            step=step,
            messages=messages,
            attempts=attempts,
        )
        raise NoRouteAvailable(f"every candidate failed: {summary}")

    def _call_with_retries(
        self,
        cat: RouterCatalog,
        cand: Candidate,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        attempts: list[dict[str, Any]],
    ) -> ChatResult | None:
        policy = cat.policy
        entry = cat.models[cand.model]
        endpoint = cat.endpoint_for(cand.model, self.local_base_url or "")
        timeout = entry.timeout_s or endpoint.timeout_s or policy.timeout_s
        for attempt in range(policy.retries + 1):
            t0 = time.perf_counter()
            try:
                if cand.endpoint is not None:
                    result = self.clients.chat(endpoint, cand.upstream_model, messages, params, timeout)
                elif self.local_call is not None:
                    result = self.local_call(cand.upstream_model, messages, params, timeout)
                else:
                    raise CallFailed(
                        "local models are served in-process and no local_call was given",
                        retryable=False,
                        cool=False,
                    )
            except CallFailed as exc:
                attempts.append(
                    {
                        "model": cand.model,
                        "attempt": attempt + 1,
                        "error": str(exc),
                        "ms": round((time.perf_counter() - t0) * 1000, 1),
                    }
                )
                if exc.cool:
                    self.cooldowns.fail(cand.model, policy.cooldown_s)
                if not exc.retryable or attempt == policy.retries:
                    return None
                self._sleep(policy.backoff_s * (2**attempt))
                continue
            attempts.append(
                {
                    "model": cand.model,
                    "attempt": attempt + 1,
                    "error": None,
                    "ms": round((time.perf_counter() - t0) * 1000, 1),
                }
            )
            self.cooldowns.ok(cand.model)
            return result
        return None

    def _finish(
        self,
        decision: RouteDecision,
        cand: Candidate,
        kind: str,
        step: int | None,
        started: float,
        messages: Sequence[Mapping[str, Any]],
        attempts: list[dict[str, Any]],
        fallback_used: bool,
        result: ChatResult,
        cache_hit: bool = False,
    ) -> RoutedResult:
        latency = (time.perf_counter() - started) * 1000
        usage = (result.prompt_tokens, result.completion_tokens)
        event = self.record(
            decision,
            cand.model,
            latency,
            usage,
            None,
            fallback_used,
            cache_hit,
            kind=kind,
            step=step,
            messages=messages,
            attempts=attempts,
        )
        return RoutedResult(
            content=result.content,
            model=cand.model,
            decision=decision,
            latency_ms=latency,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            cost_usd=event.cost_usd,
            cache_hit=cache_hit,
            fallback_used=fallback_used,
            attempts=attempts,
        )

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
        self.clients.close()
        if self._probe is not None:
            self._probe.close()
        if self.cache is not None:
            self.cache.close()
