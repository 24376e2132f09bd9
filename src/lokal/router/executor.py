"""The one place a routing decision is carried out: plan -> cache -> candidates in order, each with retries
(exponential backoff), cooldowns for the ones that fail, the budget charged and one trace line per request.

The same loop serves a whole answer and a stream. A stream commits to a candidate only once its first real
chunk (content, a tool call, a finish) has arrived: until then nothing has reached the client, so a refused
connection, a 500 or an error frame still falls back to the next candidate. A failure after that ends the
stream with an error (protocol/sse.py writes it as an OpenAI error frame) and the trace records it.

Callers: the server's ``model="auto"`` (lokal.router.server, with the in-process backend for local models),
and the CLI and pipelines through lokal.router.session's synchronous facade.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lokal.errors import LokalError, Overloaded, UpstreamError
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.common import new_id, now
from lokal.protocol.outputs import ChatChoice, ChatCompletion, ChatMessage, Usage
from lokal.router.backends import (
    Backend,
    CallFailed,
    ChatCall,
    Delta,
    Opened,
    Target,
    completion_deltas,
    estimate_tokens,
    structured,
)
from lokal.router.cache import CachedResponse, cache_key, is_deterministic
from lokal.router.policy import Candidate, RouteDecision
from lokal.router.router import AUTO, NoRouteAvailable, Router
from lokal.router.upstream import HttpBackend

log = logging.getLogger("lokal.router")
T = TypeVar("T")


@dataclass(slots=True)
class RoutedRequest:
    messages: Sequence[Mapping[str, Any]]  # as the client sent them (tool turns included)
    params: Mapping[str, Any] = field(default_factory=dict)
    router: str = AUTO
    intent: str | None = None  # force one (skips detection)
    kind: str = "route"  # trace: "route", or a pipeline's "plan" / "step" / "refine"
    step: int | None = None
    trace_id: str | None = None
    body: ChatCompletionRequest | None = None  # the client's request, for the in-process backend
    include_usage: bool = False  # streams: pass the usage chunk on to the client


@dataclass(slots=True)
class RoutedResult:
    content: str
    model: str  # the catalog alias that answered
    decision: RouteDecision
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hit: bool
    fallback_used: bool
    attempts: list[dict[str, Any]] = field(default_factory=list)
    completion: ChatCompletion | None = None  # the OpenAI body (non-streamed calls)
    model_id: str = ""  # what served it: an engine variant id or the upstream's model name

    @property
    def headers(self) -> dict[str, str]:
        return response_headers(self.decision, self.model)


def response_headers(decision: RouteDecision, model_used: str | None = None) -> dict[str, str]:
    headers = {
        "x-lokal-router": decision.router,
        "x-lokal-intent": decision.intent,
        "x-lokal-trace-id": decision.trace_id,
    }
    if model_used:
        headers["x-lokal-routed-model"] = model_used
    return headers


def as_failure(exc: BaseException, timeout_s: float) -> CallFailed | None:
    """The retry / fall-back vocabulary for what a backend raised; None for what is not a call failure."""
    if isinstance(exc, CallFailed):
        return exc
    if isinstance(exc, Overloaded):  # a full queue frees up: worth a retry, not a cooldown
        return CallFailed(exc.message, retryable=True, cool=False, status=exc.status_code)
    if isinstance(exc, LokalError):
        return CallFailed(exc.message, retryable=False, cool=exc.status_code >= 500, status=exc.status_code)
    if isinstance(exc, TimeoutError):
        return CallFailed(f"timed out after {timeout_s:g}s", retryable=False, cool=True)
    return None


class _Run:
    """One request being executed: its decision, attempts so far, and how it is accounted for at the end."""

    def __init__(self, ex: Executor, req: RoutedRequest, decision: RouteDecision) -> None:
        self.ex, self.req, self.decision = ex, req, decision
        self.attempts: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        pol = ex.router.catalog.policy.cache
        params = req.params
        self.use_cache = (
            ex.router.cache is not None
            and pol.enabled
            and (not pol.only_deterministic or is_deterministic(params))
            and not structured(params)
        )

    def key(self, cand: Candidate) -> str:
        return cache_key(f"{cand.upstream_model}@{cand.endpoint}", self.req.messages, self.req.params)

    def cached(self, cand: Candidate) -> CachedResponse | None:
        cache = self.ex.router.cache
        return cache.get(self.key(cand)) if self.use_cache and cache is not None else None

    def remember(self, cand: Candidate, content: str, usage: tuple[int, int]) -> None:
        cache = self.ex.router.cache
        if self.use_cache and cache is not None:
            cache.put(self.key(cand), CachedResponse(content, usage[0], usage[1], cand.model))

    def info(self, cand: Candidate, fallback: bool) -> dict[str, Any]:
        d = self.decision
        return {
            "router": d.router,
            "model": cand.model,
            "intent": d.intent,
            "confidence": round(d.confidence, 4),
            "escalated": d.escalated,
            "reason": d.reason,
            "trace_id": d.trace_id,
            "fallback_used": fallback,
        }

    def record(
        self, model: str | None, usage: tuple[int, int] | None, error: str | None, fallback: bool, cache_hit: bool
    ) -> tuple[float, float]:
        """Trace line and budget; (latency ms, cost). A full disk must not fail an answer already produced."""
        latency = (time.perf_counter() - self.started) * 1000
        r = self.req
        try:
            ev = self.ex.router.record(
                self.decision,
                model,
                latency,
                usage,
                error,
                fallback,
                cache_hit,
                kind=r.kind,
                step=r.step,
                messages=r.messages,
                attempts=self.attempts,
            )
        except OSError as exc:
            log.warning("router trace not written: %s", exc)
            return latency, 0.0
        return latency, ev.cost_usd

    def result(self, cand: Candidate, index: int, content: str, usage: tuple[int, int], **kw: Any) -> RoutedResult:
        cache_hit = bool(kw.pop("cache_hit", False))
        latency, cost = self.record(cand.model, usage, None, index > 0, cache_hit)
        return RoutedResult(
            content, cand.model, self.decision, latency, usage[0], usage[1], cost, cache_hit, index > 0,
            self.attempts, **kw,
        )  # fmt: skip


class Executor:
    """``local``: the backend for candidates without an endpoint (the server's own models); ``http``: every
    candidate with one. ``sleep``: the backoff between retries (tests record it)."""

    def __init__(
        self,
        router: Router,
        *,
        local: Backend | None = None,
        http: HttpBackend | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.router = router
        self.local = local
        self.http = http or HttpBackend()
        self._sleep = sleep

    async def _start(self, req: RoutedRequest) -> _Run:
        # Detection may encode with MiniLM (loading it the first time) and residency may ask a server: a thread.
        decision = await asyncio.to_thread(
            self.router.plan,
            req.messages,
            router=req.router,
            intent=req.intent,
            max_tokens=req.params.get("max_tokens"),
            trace_id=req.trace_id,
        )
        return _Run(self, req, decision)

    def _target(self, cand: Candidate) -> tuple[Backend, Target]:
        cat = self.router.catalog
        entry = cat.models[cand.model]
        policy_timeout = cat.policy.timeout_s
        if cand.endpoint is None:
            if self.local is None:
                raise CallFailed(f"{cand.model} is local and nothing serves it in-process", retryable=False, cool=False)
            return self.local, Target(cand.model, cand.upstream_model, None, entry.timeout_s or policy_timeout)
        endpoint = cat.endpoint_for(cand.model, cand.endpoint)
        timeout = entry.timeout_s or endpoint.timeout_s or policy_timeout
        return self.http, Target(cand.model, cand.upstream_model, endpoint, timeout)

    async def _first_success(
        self,
        run: _Run,
        attempt: Callable[[Backend, Target], Awaitable[T]],
    ) -> tuple[Candidate, int, T | CachedResponse]:
        """The first candidate that answers (or has an answer cached), trying each with retries."""
        policy = self.router.catalog.policy
        cooldowns = self.router.cooldowns
        for i, cand in enumerate(run.decision.candidates):
            hit = run.cached(cand)
            if hit is not None:
                return cand, i, hit
            for n in range(policy.retries + 1):
                t0 = time.perf_counter()
                timeout = policy.timeout_s
                try:
                    backend, target = self._target(cand)
                    timeout = target.timeout_s
                    async with asyncio.timeout(target.timeout_s):
                        got = await attempt(backend, target)
                except (CallFailed, LokalError, TimeoutError) as exc:
                    failed = as_failure(exc, timeout)
                    assert failed is not None
                    ms = round((time.perf_counter() - t0) * 1000, 1)
                    run.attempts.append({"model": cand.model, "attempt": n + 1, "error": str(failed), "ms": ms})
                    if failed.cool:
                        cooldowns.fail(cand.model, policy.cooldown_s)
                    if not failed.retryable or n == policy.retries:
                        break
                    await self._sleep(policy.backoff_s * (2**n))
                    continue
                ms = round((time.perf_counter() - t0) * 1000, 1)
                run.attempts.append({"model": cand.model, "attempt": n + 1, "error": None, "ms": ms})
                cooldowns.ok(cand.model)
                return cand, i, got
        summary = "; ".join(f"{a['model']}: {a['error']}" for a in run.attempts if a.get("error"))
        run.record(None, None, summary, bool(run.attempts), False)
        raise NoRouteAvailable(f"every candidate failed: {summary}")

    def _call(self, req: RoutedRequest) -> ChatCall:
        return ChatCall(req.messages, req.params, req.body)

    async def complete(self, req: RoutedRequest) -> RoutedResult:
        run = await self._start(req)
        call = self._call(req)
        cand, i, got = await self._first_success(run, lambda backend, target: backend.complete(target, call))
        info = run.info(cand, i > 0)
        if isinstance(got, CachedResponse):
            body = _cached_body(cand.model, got)
            body.lokal_router = info
            usage = (got.prompt_tokens, got.completion_tokens)
            return run.result(
                cand, i, got.content, usage, cache_hit=True, completion=body, model_id=cand.upstream_model
            )
        got.completion.lokal_router = info
        usage = (got.prompt_tokens, got.completion_tokens)
        run.remember(cand, got.content, usage)
        return run.result(cand, i, got.content, usage, completion=got.completion, model_id=got.model_id)

    async def stream(self, req: RoutedRequest) -> RoutedStream:
        run = await self._start(req)
        call = self._call(req)

        async def opened(backend: Backend, target: Target) -> tuple[Opened, list[Delta]]:
            o = await backend.stream(target, call)
            buffered: list[Delta] = []
            try:
                async for d in o.deltas:  # the role chunk alone commits to nothing
                    buffered.append(d)
                    if d.substantive:
                        break
            except BaseException:
                await o.aclose()
                raise
            return o, buffered

        cand, i, got = await self._first_success(run, opened)
        if isinstance(got, CachedResponse):
            deltas = completion_deltas(_cached_body(cand.model, got))
            return RoutedStream(run, cand, i, None, deltas, cand.upstream_model, cache_hit=True)
        o, buffered = got
        return RoutedStream(run, cand, i, o, buffered, o.model_id)

    async def aclose(self) -> None:
        await self.http.aclose()


def _cached_body(alias: str, hit: CachedResponse) -> ChatCompletion:
    return ChatCompletion(
        id=new_id("chatcmpl"),
        created=now(),
        model=alias,
        choices=[ChatChoice(index=0, message=ChatMessage(content=hit.content), finish_reason="stop")],
        usage=Usage.of(hit.prompt_tokens, hit.completion_tokens),
    )


class RoutedStream:
    """The chunks of a routed answer (``Delta``: ``.item`` as the client gets it, ``.text``), committed to one
    candidate. Closing it, or reading it to its end, writes the trace line; ``result`` is set then."""

    def __init__(
        self,
        run: _Run,
        cand: Candidate,
        index: int,
        opened: Opened | None,
        buffered: list[Delta],
        model_id: str,
        *,
        cache_hit: bool = False,
    ) -> None:
        self._run, self._cand, self._index = run, cand, index
        self._opened, self._buffered = opened, buffered
        self.decision = run.decision
        self.model = cand.model
        self.model_id = model_id
        self.fallback_used = index > 0
        self.cache_hit = cache_hit
        self.attempts = run.attempts
        self.info = run.info(cand, index > 0)
        self.result: RoutedResult | None = None
        self._parts: list[str] = []
        self._usage: tuple[int, int] | None = None
        self._gen = self._chunks()

    @property
    def headers(self) -> dict[str, str]:
        return response_headers(self.decision, self.model)

    def __aiter__(self) -> RoutedStream:
        return self

    def __anext__(self) -> Awaitable[Delta]:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()
        finally:
            if self._opened is not None:
                await self._opened.aclose()
            if self.result is None:  # closed before it was read at all
                self._end("stream ended early: closed before it was read", complete=False)

    def _note(self, d: Delta) -> bool:
        """Track text and usage; whether the client gets this chunk."""
        self._parts.append(d.text)
        if d.usage is not None:
            self._usage = d.usage
            return d.substantive or self._run.req.include_usage
        return True

    async def _chunks(self) -> AsyncGenerator[Delta, None]:
        error: str | None = None
        complete = False
        try:
            for d in self._buffered:
                if self._note(d):
                    yield d
            if self._opened is not None:
                async for d in self._opened.deltas:
                    if self._note(d):
                        yield d
            complete = True
        except CallFailed as exc:
            error = f"{self.model} failed mid-stream: {exc}"
            if exc.cool:
                self._run.ex.router.cooldowns.fail(self.model, self._run.ex.router.catalog.policy.cooldown_s)
            raise UpstreamError(error) from None
        except LokalError as exc:
            error = exc.message
            raise
        except BaseException as exc:
            error = f"stream ended early: {type(exc).__name__}"
            raise
        finally:
            if self._opened is not None:
                await self._opened.aclose()
            self._end(error, complete)

    def _end(self, error: str | None, complete: bool) -> None:
        if self.result is not None:
            return
        text = "".join(self._parts)
        usage = self._usage
        if usage is None:
            prompt = " ".join(str(m.get("content") or "") for m in self._run.req.messages)
            usage = (estimate_tokens(prompt), estimate_tokens(text))
        run = self._run
        if error is None and complete and not self.cache_hit:
            run.remember(self._cand, text, usage)
        latency, cost = run.record(self.model, usage, error, self.fallback_used, self.cache_hit)
        self.result = RoutedResult(
            text, self.model, self.decision, latency, usage[0], usage[1], cost, self.cache_hit, self.fallback_used,
            self.attempts, None, self.model_id,
        )  # fmt: skip


__all__ = [
    "Executor",
    "RoutedRequest",
    "RoutedResult",
    "RoutedStream",
    "as_failure",
    "response_headers",
]
