"""Any OpenAI-compatible upstream (vLLM, llama-server, Ollama, Foundry Local, a cloud deployment) as an engine.

This is how lokal reaches past one machine: the catalog names the upstream (one base URL, or several replicas of
it), lokal keeps the API, queueing, metrics and routing in front of it, and the distributed engine does the
heavy lifting. The engine is async: many requests stream at once on the server's event loop through one pooled
client per replica (lokal.engines.upstream_pool), each upstream chunk passed on as it arrives. The async worker
(lokal.runtime.async_worker) bounds how many run at once by `capacity` and queues the rest.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lokal.catalog.spec import DEFAULT_MAX_CONCURRENCY, ModelSpec, Variant
from lokal.config import env_value
from lokal.engines.base import (
    ChatMessage,
    EngineInfo,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from lokal.engines.upstream_pool import PoolPolicy, UpstreamPool
from lokal.errors import EngineError, InvalidRequest, UpstreamError

T = TypeVar("T")
FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "tool_calls"})
OWN_FIELDS = frozenset({"model", "stream", "stream_options", "messages", "prompt"})


class RemoteEngine:
    def __init__(
        self,
        timeout: float = 300.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.info = EngineInfo()
        self._timeout = timeout
        self._transport = transport
        self._pool: UpstreamPool | None = None
        self._urls: list[str] = []
        self._headers: dict[str, str] = {}
        self._policy: PoolPolicy | None = None
        self._model = ""
        self._alias = ""
        # The loop the pool lives on: the server's (start() from the async worker), or a private one on a thread
        # of its own for callers without a loop (lokal run in-process, the sync face below).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop: threading.Thread | None = None
        self._loop_lock = threading.Lock()

    # -- lifetime ----------------------------------------------------------------------------------------------
    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        """Reads the upstream config; connects nothing (the pool starts on its event loop, in `start`)."""
        if not variant.upstream_urls:
            raise EngineError(f"remote variant {variant.id} has no base_url")
        t0 = time.perf_counter()
        key = env_value(variant.api_key_env) if variant.api_key_env else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._urls = variant.upstream_urls
        self._model = variant.upstream_model or spec.alias
        self._alias = spec.alias
        self._policy = PoolPolicy(
            max_concurrency=variant.max_concurrency or DEFAULT_MAX_CONCURRENCY,
            balance=variant.balance,
            health_check_s=variant.health_check_s,
            eject_after=variant.eject_after,
            eject_cooldown_s=variant.eject_cooldown_s,
        )
        self.info = EngineInfo(
            load_seconds=time.perf_counter() - t0,
            context_length=spec.context_length,
            extra={"upstream": self._urls[0]},  # per-replica figures: replicas()
        )

    async def start(self) -> None:
        """Open the pool on the running loop (and start its health checks); the engine stays on this loop."""
        if self._pool is not None:
            return
        if self._policy is None:
            raise EngineError("remote engine is not loaded")
        self._loop = asyncio.get_running_loop()
        self._pool = UpstreamPool(
            self._urls,
            headers=self._headers,
            timeout_s=self._timeout,
            policy=self._policy,
            transport=self._transport,
        )
        await self._pool.start()

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def unload(self) -> None:
        """Close the pool if it still runs (the async worker closes it on the server's loop first)."""
        loop, thread = self._loop, self._own_loop
        open_elsewhere = loop is not None and not loop.is_closed() and (thread is not None or not _on(loop))
        if self._pool is not None and open_elsewhere:
            self._on_loop(self.aclose())
        if thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
        self._loop = self._own_loop = None
        self._pool = None

    @property
    def capacity(self) -> int:
        """Requests the healthy replicas take at once; before the pool starts, what the catalog allows."""
        if self._pool is not None:
            return self._pool.capacity
        return len(self._urls) * (self._policy.max_concurrency if self._policy else DEFAULT_MAX_CONCURRENCY)

    def replicas(self) -> list[dict[str, Any]]:
        """One row per replica (url, in_flight, healthy, latency_ewma_ms, failures, ejected_for_s)."""
        if self._pool is None:
            return [
                {"url": u, "in_flight": 0, "healthy": True, "latency_ewma_ms": None, "failures": 0, "ejected_for_s": 0}
                for u in self._urls
            ]
        return self._pool.stats()

    def _require_pool(self) -> UpstreamPool:
        if self._pool is None:
            raise EngineError("remote engine is not started")
        return self._pool

    def count_tokens(self, req: GenerationRequest) -> int:
        text = "\n".join(m.content for m in req.messages or ()) if req.messages else (req.prompt or "")
        return max(1, len(text) // 4)  # the upstream owns the tokenizer; this is only an estimate

    def _payload(self, req: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The upstream request: every sampling field the API (or the llama.cpp/vLLM extensions) has a name for,
        then the client's own OpenAI fields from `passthrough`, as they came."""
        chat = req.messages is not None
        if req.grammar and "response_format" not in req.passthrough:
            # A grammar lokal built (a tool_choice constraint) has no OpenAI field: the upstream would ignore it.
            raise InvalidRequest(
                f"{self._alias} is served by an upstream API, which takes no GBNF grammar; send the request's "
                "own response_format or tool_choice instead",
                param="grammar",
            )
        body: dict[str, Any] = {
            "model": self._model,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        if req.json_mode:
            body["response_format"] = {"type": "json_object"}
        if req.presence_penalty:
            body["presence_penalty"] = req.presence_penalty
        if req.frequency_penalty:
            body["frequency_penalty"] = req.frequency_penalty
        if req.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in req.logit_bias.items()}
        # Extensions only when asked for: an upstream that does not know them then never sees them.
        if req.top_k is not None:
            body["top_k"] = req.top_k
        if req.min_p is not None:
            body["min_p"] = req.min_p
        if req.ignore_eos:
            body["ignore_eos"] = True  # vLLM's and llama.cpp's name: a fixed output length (benchmarks)
        if req.repeat_penalty != 1.0:
            body["repeat_penalty"] = req.repeat_penalty  # llama.cpp's name
            body["repetition_penalty"] = req.repeat_penalty  # vLLM's
        if req.logprobs is not None:
            if chat:
                body["logprobs"] = True
                body["top_logprobs"] = req.logprobs
            else:
                body["logprobs"] = req.logprobs  # the completions API's own form: how many alternatives
        if req.tools:
            body["tools"] = [dict(t) for t in req.tools]
        # The client's own fields, except those that say how lokal talks to the upstream.
        body.update({k: v for k, v in req.passthrough.items() if k not in OWN_FIELDS})
        if req.messages is not None:
            body["messages"] = [_wire_message(m) for m in req.messages]
            return "/chat/completions", body
        body["prompt"] = req.prompt or ""
        return "/completions", body

    async def agenerate(self, req: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """The upstream's chunks as events, each as it arrives. Failing before the first chunk, the pool tries
        another replica; after it, the error is raised here and serving ends the stream with an error frame."""
        pool = self._require_pool()
        path, body = self._payload(req)  # a request the API cannot carry is refused before anything is sent
        finish: FinishReason = "stop"
        usage: Usage | None = None
        n_chunks = 0
        try:
            async for chunk in pool.stream(path, body):
                if chunk.get("error"):
                    raise UpstreamError(f"upstream {self._alias} failed mid-stream: {_error_text(chunk)}")
                if chunk.get("usage"):
                    u = chunk["usage"]
                    usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                for choice in chunk.get("choices") or ():
                    if choice.get("index", 0) != 0:  # serving fans n out as separate requests
                        continue
                    event = _event(choice)
                    if event is not None:
                        n_chunks += 1
                        yield event
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = reason if reason in FINISH_REASONS else "stop"  # content_filter and such
        except httpx.HTTPError as exc:  # the pool wraps its own; this is a last guard
            raise UpstreamError(f"upstream {self._alias} failed: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not a chunk's shape
            raise UpstreamError(f"upstream {self._alias} sent a chunk lokal cannot read: {exc}") from exc
        yield GenerationEvent(finish_reason=finish, usage=usage or Usage(0, n_chunks))

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        pool = self._require_pool()
        data = await pool.post_json("/embeddings", {"model": self._model, "input": list(texts)})
        try:
            return [list(map(float, d["embedding"])) for d in data["data"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"upstream {self._alias} sent embeddings lokal cannot read: {exc}") from exc

    # -- the sync face: for callers on another thread than the engine's loop --------------------------------
    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine's loop and wait for it here; with no loop yet, the engine gets its own."""
        with self._loop_lock:  # two threads' first calls make one loop
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"lokal-remote-{self._alias}", daemon=True)
                thread.start()
                self._loop, self._own_loop = loop, thread
                asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        if _on(self._loop):
            coro.close()
            raise EngineError("the remote engine's sync calls cannot run on its own event loop; use agenerate")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        """`agenerate` for a caller on a thread; `cancel` (checked between chunks) closes the upstream request."""
        events = self.agenerate(req)
        try:
            while not cancel.is_set():
                try:
                    event = self._on_loop(_next(events))
                except StopAsyncIteration:
                    return
                yield event
            yield GenerationEvent(finish_reason="cancelled")
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._on_loop(events.aclose())

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self._on_loop(self.aembed(texts))


async def _next(events: AsyncIterator[GenerationEvent]) -> GenerationEvent:
    return await anext(events)


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _wire_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        if not m.content:
            out["content"] = None  # OpenAI's shape for an assistant turn that only called tools
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _event(choice: dict[str, Any]) -> GenerationEvent | None:
    """One streamed choice as an engine event: text, tool-call pieces and logprobs; None when it has none."""
    delta = choice.get("delta") or {}
    text = delta.get("content") or choice.get("text") or ""
    calls = tuple(_tool_call(c) for c in delta.get("tool_calls") or ())
    logprobs = _logprobs(choice.get("logprobs"))
    if not (text or calls or logprobs):
        return None
    return GenerationEvent(text=text, tool_calls=calls, logprobs=logprobs)


def _tool_call(raw: dict[str, Any]) -> ToolCallDelta:
    fn = raw.get("function") or {}
    return ToolCallDelta(
        index=int(raw.get("index", 0)),
        id=raw.get("id") or None,
        name=fn.get("name") or None,
        arguments=fn.get("arguments") or "",
    )


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...]:
    """Chat's `logprobs.content` entries, or the completions API's parallel arrays."""
    if not isinstance(raw, dict):
        return ()
    if raw.get("content") is not None:
        return tuple(
            TokenLogprob(
                e["token"],
                float(e["logprob"]),
                _bytes(e),
                tuple(TopLogprob(t["token"], float(t["logprob"]), _bytes(t)) for t in e.get("top_logprobs") or ()),
            )
            for e in raw["content"]
        )
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        TokenLogprob(
            tok,
            float(lp),
            tuple(tok.encode("utf-8")),
            tuple(TopLogprob(t, float(v), tuple(t.encode("utf-8"))) for t, v in (top or {}).items()),
        )
        for tok, lp, top in zip(tokens, values, tops, strict=False)
        if lp is not None
    )


def _bytes(entry: dict[str, Any]) -> tuple[int, ...]:
    raw = entry.get("bytes")
    return tuple(int(b) for b in raw) if raw is not None else tuple(str(entry["token"]).encode("utf-8"))


def _error_text(chunk: dict[str, Any]) -> str:
    err = chunk["error"]
    return str(err.get("message", err)) if isinstance(err, dict) else str(err)
