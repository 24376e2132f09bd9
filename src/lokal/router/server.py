"""Server feature: ``model="auto"`` (and router presets) in /v1/chat/completions.

Installed by ``lokal.server.extensions`` as ``install(app, state)``; it sets ``state.router`` to a hook the
chat route consults. Local candidates run through the server's own serving path (so metrics, queues and
TTLs apply); remote ones through the router's OpenAI client. A remote answer to a streaming request is
sent as one chunk. Set ``LOKAL_ROUTER_WARM=1`` to load MiniLM at start-up instead of on the first request.
``GET /lokal/router`` reports the catalog source, reload errors, cache hits and models cooling down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI

from lokal.engines.base import ToolCallDelta
from lokal.errors import LokalError
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.chunks import ChatChunks
from lokal.protocol.common import as_dict, new_id, now
from lokal.protocol.logprobs import ChatLogprobs
from lokal.protocol.outputs import ChatChoice, ChatCompletion, ChatMessage, FinishReason, FunctionCall, ToolCall, Usage
from lokal.protocol.sse import Item
from lokal.router.policy import Candidate, RouteDecision
from lokal.router.router import NoRouteAvailable
from lokal.router.serving import ServedRouter, response_headers
from lokal.router.upstream import EXTENSION_PARAMS, STRUCTURED_PARAMS, CallFailed, ChatResult, estimate_tokens
from lokal.server.serving import Outcome
from lokal.server.state import AppState
from lokal.server.streaming import ManagedStream

log = logging.getLogger("lokal.router")


def _params(body: ChatCompletionRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.requested_max_tokens,
        "stop": body.stop,
        "seed": body.seed,
    }
    sent = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    for key in (*STRUCTURED_PARAMS, *EXTENSION_PARAMS, "response_format", "presence_penalty", "frequency_penalty"):
        if key in sent:
            params[key] = sent[key]
    return params


def _structured(params: dict[str, Any]) -> bool:
    """A request whose answer is more than text: the text cache cannot answer it."""
    return any(params.get(k) not in (None, False, 1) for k in STRUCTURED_PARAMS) or (
        isinstance(params.get("response_format"), dict) and params["response_format"].get("type") == "json_schema"
    )


def _upstream_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The conversation as the client sent it (tool calls and tool results included) for a remote model."""
    return [m.model_dump(mode="json", exclude_none=True) for m in body.messages]


def _openai_body(cand: Candidate, result: ChatResult, info: dict[str, Any]) -> ChatCompletion:
    if result.raw is not None:  # tool calls, logprobs or several choices: the upstream's answer as it came
        return _from_upstream(cand, result, info)
    finish: FinishReason = "length" if result.finish_reason == "length" else "stop"
    return ChatCompletion(
        id=new_id("chatcmpl"),
        created=now(),
        model=cand.model,
        choices=[ChatChoice(index=0, message=ChatMessage(content=result.content), finish_reason=finish)],
        usage=Usage.of(result.prompt_tokens, result.completion_tokens),
        lokal_router=info,
    )


def _from_upstream(cand: Candidate, result: ChatResult, info: dict[str, Any]) -> ChatCompletion:
    """The OpenAI fields of an upstream's answer (an upstream may add its own, which the wire models refuse)."""
    raw = result.raw or {}
    choices = []
    for n, ch in enumerate(raw.get("choices") or []):
        msg = ch.get("message") or {}
        calls = [
            ToolCall(id=c["id"], function=FunctionCall(name=c["function"]["name"], arguments=fn["arguments"]))
            for c in msg.get("tool_calls") or []
            for fn in [c["function"]]
        ]
        lp = ch.get("logprobs")
        reason = ch.get("finish_reason")
        choices.append(
            ChatChoice(
                index=int(ch.get("index", n)),
                message=ChatMessage(content=msg.get("content"), tool_calls=calls or None),
                logprobs=ChatLogprobs.model_validate({"content": lp.get("content") or []}) if lp else None,
                finish_reason=reason if reason in ("stop", "length", "tool_calls") else "stop",
            )
        )
    return ChatCompletion(
        id=str(raw.get("id") or new_id("chatcmpl")),
        created=int(raw.get("created") or now()),
        model=cand.model,
        choices=choices,
        usage=Usage.of(result.prompt_tokens, result.completion_tokens),
        lokal_router=info,
    )


async def _one_chunk_stream(body: ChatCompletion, include_usage: bool) -> AsyncGenerator[Item, None]:
    chunks = ChatChunks(body.id, body.created, body.model, body.system_fingerprint)
    for choice in body.choices:
        yield chunks.role(choice.index)
        if choice.message.content:
            yield chunks.content(choice.index, choice.message.content)
        if choice.message.tool_calls:
            yield chunks.tool_calls(
                choice.index,
                [
                    ToolCallDelta(n, c.id, c.function.name, c.function.arguments)
                    for n, c in enumerate(choice.message.tool_calls)
                ],
            )
        yield chunks.finish(choice.index, choice.finish_reason)
    if include_usage:
        yield chunks.usage(body.usage)


async def _nothing() -> None:
    """The cleanup of a stream that holds no engine work."""


class RouterHook:
    """What the chat route calls for router model names (``AppState.router``)."""

    def __init__(self, served: ServedRouter, state: AppState) -> None:
        self.served = served
        self.state = state

    def handles(self, model: str) -> bool:
        return self.served.is_router_model(model)

    def names(self) -> list[str]:
        return self.served.names()

    async def chat(self, body: ChatCompletionRequest) -> tuple[Outcome, dict[str, str]]:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        # Detection may encode with MiniLM (and load it the first time): keep it off the event loop.
        decision = await asyncio.to_thread(self.served.plan, body.model, messages, max_tokens=body.requested_max_tokens)
        params = _params(body)
        cacheable = not _structured(params)
        started = time.perf_counter()
        errors: list[str] = []
        policy = self.served.router.catalog.policy
        for i, cand in enumerate(decision.candidates):
            info = {
                "router": decision.router,
                "model": cand.model,
                "intent": decision.intent,
                "confidence": round(decision.confidence, 4),
                "escalated": decision.escalated,
                "reason": decision.reason,
                "trace_id": decision.trace_id,
                "fallback_used": i > 0,
            }
            headers = response_headers(decision, cand.model)
            if not body.stream and cacheable:
                hit = self.served.cache_get(cand, messages, params)
                if hit is not None:
                    result = ChatResult(hit.content, hit.prompt_tokens, hit.completion_tokens, "stop")
                    self._record(decision, cand.model, started, result, None, i > 0, True, messages)
                    return Outcome(body=_openai_body(cand, result, info), model_id=cand.model), headers
            try:
                if cand.endpoint is None:
                    outcome = await self.state.serving.chat(body.model_copy(update={"model": cand.upstream_model}))
                    return self._local(outcome, decision, cand, started, i > 0, messages, params, info), headers
                result = await self._remote(cand, _upstream_messages(body), params, policy.retries, policy.backoff_s)
            except (LokalError, CallFailed) as exc:
                msg = exc.message if isinstance(exc, LokalError) else str(exc)
                cool = exc.cool if isinstance(exc, CallFailed) else exc.status_code >= 500
                errors.append(f"{cand.model}: {msg}")
                self.served.failed(cand.model, msg, cool=cool)
                continue
            if cacheable:
                self.served.cache_put(
                    cand, messages, params, result.content, (result.prompt_tokens, result.completion_tokens)
                )
            self._record(decision, cand.model, started, result, None, i > 0, False, messages)
            out = _openai_body(cand, result, info)
            if body.stream:
                one = ManagedStream(_one_chunk_stream(out, body.include_usage), _nothing)
                return Outcome(stream=one, model_id=cand.model), headers
            return Outcome(body=out, model_id=cand.model), headers
        summary = "; ".join(errors)
        self.served.record(
            decision,
            None,
            (time.perf_counter() - started) * 1000,
            None,
            summary,
            True,
            False,
            messages=messages,
        )
        raise NoRouteAvailable(f"every candidate failed: {summary}")

    async def _remote(
        self,
        cand: Candidate,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        retries: int,
        backoff: float,
    ) -> ChatResult:
        for attempt in range(retries + 1):
            try:
                return await asyncio.to_thread(self.served.call, cand, messages, params)
            except CallFailed as exc:
                if not exc.retryable or attempt == retries:
                    raise
                await asyncio.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _local(
        self,
        outcome: Outcome,
        decision: RouteDecision,
        cand: Candidate,
        started: float,
        fallback: bool,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        info: dict[str, Any],
    ) -> Outcome:
        if outcome.body is not None:
            body = outcome.body
            assert isinstance(body, ChatCompletion)
            body.model = cand.model  # the alias that answered; the engine's variant id stays in x-lokal-model
            body.lokal_router = info
            choice = body.choices[0] if body.choices else None
            text = (choice.message.content or "") if choice else ""
            result = ChatResult(
                text,
                body.usage.prompt_tokens,
                body.usage.completion_tokens,
                choice.finish_reason if choice else None,
            )
            if not _structured(params):
                self.served.cache_put(cand, messages, params, text, (result.prompt_tokens, result.completion_tokens))
            self._record(decision, cand.model, started, result, None, fallback, False, messages)
            return outcome
        assert outcome.stream is not None
        relay = self._relay(outcome.stream, decision, cand, started, fallback, messages)
        return Outcome(stream=ManagedStream(relay, outcome.stream.finish), model_id=outcome.model_id)

    async def _relay(
        self,
        stream: AsyncIterator[Item],
        decision: RouteDecision,
        cand: Candidate,
        started: float,
        fallback: bool,
        messages: list[dict[str, Any]],
    ) -> AsyncGenerator[Item, None]:
        """Pass the chunks through untouched, noting text and usage for the trace written at the end."""
        parts: list[str] = []
        usage: Mapping[str, Any] | None = None
        error: str | None = None
        try:
            async for item in stream:
                chunk = as_dict(item)
                usage = chunk.get("usage") or usage
                for ch in chunk.get("choices") or []:
                    parts.append((ch.get("delta") or {}).get("content") or "")
                yield item
        except BaseException as exc:
            error = f"stream ended early: {type(exc).__name__}"
            raise
        finally:
            if isinstance(stream, ManagedStream):
                await stream.aclose()
            text = "".join(parts)
            if usage:
                pt, ct = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            else:
                pt = estimate_tokens(" ".join(str(m.get("content") or "") for m in messages))
                ct = estimate_tokens(text)
            self._record(
                decision,
                cand.model,
                started,
                ChatResult(text, pt, ct, None),
                error,
                fallback,
                False,
                messages,
            )

    def _record(
        self,
        decision: RouteDecision,
        model: str,
        started: float,
        result: ChatResult,
        error: str | None,
        fallback: bool,
        cache_hit: bool,
        messages: list[dict[str, Any]],
    ) -> None:
        try:
            self.served.record(
                decision,
                model,
                (time.perf_counter() - started) * 1000,
                (result.prompt_tokens, result.completion_tokens),
                error,
                fallback,
                cache_hit,
                messages=messages,
            )
        except OSError as exc:  # a full disk must not fail the answer that was already produced
            log.warning("router trace not written: %s", exc)


def install(app: FastAPI, state: AppState) -> None:
    def local_models() -> list[Any]:
        out = []
        for spec in state.catalog.specs():
            if spec.task == "chat-completion" and state.is_cached(state.catalog.best_variant(spec)):
                out.append(spec)
        return out

    def loaded() -> set[str]:
        return {lm.spec.alias for lm in state.manager.loaded()}

    served = ServedRouter.from_home(state.settings.home, local_models, loaded)
    state.router = RouterHook(served, state)
    state.extras["router"] = served

    @app.get("/lokal/router")
    async def router_status() -> dict[str, Any]:
        return served.status()

    if os.environ.get("LOKAL_ROUTER_WARM") == "1":
        threading.Thread(target=served.warm, name="router-warm", daemon=True).start()
