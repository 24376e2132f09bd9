"""HTTP to any OpenAI-compatible endpoint (vLLM, llama-server, Ollama, a cloud API, another lokal), async.

One pooled ``httpx.AsyncClient`` per endpoint and key (keep-alive across calls); no retries here, the
executor owns them (it also knows the fallbacks). Streams are read as they arrive and passed on chunk by
chunk, re-serialised only to name the catalog alias as ``model``. Errors are sorted into retry / fall back /
give up (:class:`CallFailed`); an upstream that ignores ``stream`` and answers whole is read as one chunk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from lokal.protocol.common import new_id, now
from lokal.protocol.logprobs import ChatLogprobs
from lokal.protocol.outputs import ChatChoice, ChatCompletion, ChatMessage, FunctionCall, ToolCall, Usage
from lokal.router.backends import (
    EXTENSION_PARAMS,
    FORWARDED_PARAMS,
    STRUCTURED_PARAMS,
    Answer,
    CallFailed,
    ChatCall,
    Delta,
    Opened,
    Target,
    answer_text,
    completion_deltas,
    estimate_tokens,
    read_chunk,
)
from lokal.router.catalog import Endpoint


def request_body(model: str, call: ChatCall, stream: bool) -> dict[str, Any]:
    params = call.params
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in call.messages]}
    body.update(
        {k: params[k] for k in (*FORWARDED_PARAMS, *STRUCTURED_PARAMS, *EXTENSION_PARAMS) if params.get(k) is not None}
    )
    if stream:
        # Usage for the trace and the budget; the executor drops the chunk when the client did not ask for it.
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def completion_from(raw: Mapping[str, Any], alias: str, messages: Any) -> tuple[ChatCompletion, bool]:
    """The OpenAI fields of an upstream's answer (an upstream may add its own, which the wire models refuse),
    and whether its usage had to be estimated."""
    choices = []
    for n, ch in enumerate(raw.get("choices") or []):
        msg = ch.get("message") or {}
        calls = [
            ToolCall(
                id=c["id"], function=FunctionCall(name=c["function"]["name"], arguments=c["function"]["arguments"])
            )
            for c in msg.get("tool_calls") or []
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
    u = raw.get("usage")
    if u:
        usage, estimated = Usage.of(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)), False
    else:
        prompt = " ".join(str(m.get("content") or "") for m in messages)
        text = (choices[0].message.content or "") if choices else ""
        usage, estimated = Usage.of(estimate_tokens(prompt), estimate_tokens(text)), True
    body = ChatCompletion(
        id=str(raw.get("id") or new_id("chatcmpl")),
        created=int(raw.get("created") or now()),
        model=alias,
        choices=choices,
        usage=usage,
    )
    return body, estimated


def _message(data: Any, fallback: str) -> str:
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return fallback


def _status_failure(status: int, content: bytes) -> CallFailed:
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    server_side = status >= 500 or status == 429
    text = _message(data, content.decode(errors="replace")[:200] or httpx.codes.get_reason_phrase(status))
    return CallFailed(f"HTTP {status}: {text}", retryable=server_side, cool=server_side, status=status)


def _transport_failure(exc: BaseException, timeout_s: float) -> CallFailed:
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return CallFailed(f"timed out after {timeout_s:g}s", retryable=False, cool=True)
    return CallFailed(f"connection failed: {type(exc).__name__}: {exc}", retryable=True, cool=True)


class HttpBackend:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._clients: dict[tuple[str, str], httpx.AsyncClient] = {}
        self._transport = transport

    def client(self, endpoint: Endpoint) -> httpx.AsyncClient:
        key = (endpoint.base_url.rstrip("/"), endpoint.api_key())
        c = self._clients.get(key)
        if c is None:
            c = httpx.AsyncClient(
                base_url=key[0], headers={"Authorization": f"Bearer {key[1]}"}, transport=self._transport
            )
            self._clients[key] = c
        return c

    def _endpoint(self, target: Target) -> Endpoint:
        if target.endpoint is None:
            raise CallFailed(f"{target.model} is served in-process, not over HTTP", retryable=False, cool=False)
        return target.endpoint

    async def complete(self, target: Target, call: ChatCall) -> Answer:
        client = self.client(self._endpoint(target))
        try:
            r = await client.post(
                "/chat/completions",
                json=request_body(target.upstream_model, call, stream=False),
                timeout=target.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise _transport_failure(exc, target.timeout_s) from None
        if r.status_code >= 400:
            raise _status_failure(r.status_code, r.content)
        return self._answer(target, call, r.content)

    def _answer(self, target: Target, call: ChatCall, content: bytes) -> Answer:
        try:
            raw = json.loads(content)
        except ValueError:
            raise CallFailed("the upstream's answer is not JSON", retryable=True, cool=True) from None
        if not isinstance(raw, dict) or not raw.get("choices"):
            raise CallFailed("the upstream returned no choices", retryable=True, cool=True)
        body, _ = completion_from(raw, target.model, call.messages)
        return Answer(
            body, answer_text(body), body.usage.prompt_tokens, body.usage.completion_tokens, target.upstream_model
        )

    async def stream(self, target: Target, call: ChatCall) -> Opened:
        client = self.client(self._endpoint(target))
        req = client.build_request(
            "POST",
            "/chat/completions",
            json=request_body(target.upstream_model, call, stream=True),
            timeout=target.timeout_s,
        )
        try:
            resp = await client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc, target.timeout_s) from None
        if resp.status_code >= 400:
            try:
                content = await resp.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await resp.aclose()
            raise _status_failure(resp.status_code, content)
        return Opened(target.upstream_model, self._deltas(resp, target, call))

    async def _deltas(self, resp: httpx.Response, target: Target, call: ChatCall) -> AsyncIterator[Delta]:
        try:
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                answer = self._answer(target, call, await resp.aread())
                for d in completion_deltas(answer.completion):
                    yield d
                return
            finished = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # comments (keep-alives), event names, blank separators
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise CallFailed(
                        f"the upstream sent a frame that is not JSON: {payload[:80]}", retryable=False, cool=True
                    ) from None
                if "error" in chunk and not chunk.get("choices"):
                    raise CallFailed(f"upstream error: {_message(chunk, payload[:200])}", retryable=False, cool=True)
                chunk["model"] = target.model
                text, usage, substantive = read_chunk(chunk)
                finished = finished or any(ch.get("finish_reason") for ch in chunk.get("choices") or ())
                yield Delta(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")), text, usage, substantive)
            if not finished:
                raise CallFailed("the upstream closed the stream before it finished", retryable=False, cool=True)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc, target.timeout_s) from None
        finally:
            await resp.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()


__all__ = [
    "EXTENSION_PARAMS",
    "FORWARDED_PARAMS",
    "STRUCTURED_PARAMS",
    "CallFailed",
    "HttpBackend",
    "completion_from",
    "estimate_tokens",
    "request_body",
]
