"""Protocol <-> engine: turns OpenAI requests into engine requests and engine events into OpenAI responses.

Errors travel as LokalError values; the app's handler turns them into OpenAI-shaped JSON (routes/openai.py
writes them as an error frame once a stream has started). Engine work, token counts included, runs on the
model's worker thread, never on the event loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from lokal.engines.base import GenerationEvent, GenerationRequest, Usage
from lokal.errors import EngineError, InvalidRequest
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.common import SamplingParams, new_id, now
from lokal.protocol.completions import CompletionRequest
from lokal.protocol.embeddings import EmbeddingRequest
from lokal.runtime.manager import LoadedModel, ModelManager
from lokal.server.metrics import Metrics

Kind = Literal["chat", "completion"]


@dataclass(slots=True)
class Outcome:
    """Non-streamed result, or the primed stream (headers are sent only once the first event is in hand)."""

    body: dict[str, Any] | None = None
    stream: AsyncIterator[str] | None = None
    model_id: str = ""


class Serving:
    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics

    # -- chat / completions ------------------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest) -> Outcome:
        return await self._generate("chat", body, body.to_engine(body.requested_max_tokens))  # type: ignore[arg-type]

    async def completion(self, body: CompletionRequest) -> Outcome:
        echo = body.prompt_text if body.echo else ""
        return await self._generate("completion", body, body.to_engine(body.max_tokens), echo)  # type: ignore[arg-type]

    def _check_task(self, name: str, task: str) -> None:
        """Refuse the wrong kind of model before paying for its load."""
        spec, _ = self.manager.resolve(name)
        if spec.task != task:
            if spec.task == "embeddings":
                raise InvalidRequest(f"{spec.alias} is an embeddings model; use /v1/embeddings", param="model")
            raise InvalidRequest(f"{spec.alias} is not an embeddings model; try all-minilm-l6-v2", param="model")

    async def _generate(self, kind: Kind, body: SamplingParams, req: GenerationRequest, echo: str = "") -> Outcome:
        """`echo`: text the answer starts with (the prompt, for completions with echo=true)."""
        self._check_task(body.model, "chat-completion")
        lm = await self.manager.get(body.model)
        lm.active += 1
        self.metrics.queue_depth.labels(lm.spec.alias).set(lm.worker.depth + 1)
        t0 = time.perf_counter()
        events = lm.worker.generate(req)
        try:
            first = await anext(events)  # engine errors (context too long, ...) surface here, before any header
        except BaseException:
            self._done(lm)
            raise
        rid = new_id("chatcmpl" if kind == "chat" else "cmpl")
        if body.stream:
            return Outcome(stream=self._sse(kind, rid, lm, body, first, events, t0, echo), model_id=lm.id)
        return Outcome(body=await self._collect(kind, rid, lm, first, events, t0, echo), model_id=lm.id)

    def _done(self, lm: LoadedModel) -> None:
        lm.active -= 1
        lm.touch()
        self.metrics.queue_depth.labels(lm.spec.alias).set(lm.worker.depth)

    def _observe(self, lm: LoadedModel, usage: Usage | None, t0: float, t_first: float | None) -> None:
        alias = lm.spec.alias
        if t_first is not None:
            self.metrics.ttft.labels(alias).observe(t_first - t0)
        if usage:
            self.metrics.tokens.labels(alias, "in").inc(usage.prompt_tokens)
            self.metrics.tokens.labels(alias, "out").inc(usage.completion_tokens)
            elapsed = time.perf_counter() - (t_first or t0)
            if usage.completion_tokens > 1 and elapsed > 0:
                self.metrics.tps.labels(alias).observe((usage.completion_tokens - 1) / elapsed)

    async def _collect(
        self,
        kind: Kind,
        rid: str,
        lm: LoadedModel,
        first: GenerationEvent,
        events: AsyncIterator[GenerationEvent],
        t0: float,
        echo: str,
    ) -> dict[str, Any]:
        parts: list[str] = [echo]
        last = first
        t_first: float | None = time.perf_counter() if first.text else None
        try:
            parts.append(first.text)
            async for ev in events:
                if ev.text and t_first is None:
                    t_first = time.perf_counter()
                parts.append(ev.text)
                last = ev
        finally:
            self._done(lm)
        _check_complete(last)
        usage = last.usage or Usage(0, 0)
        self._observe(lm, usage, t0, t_first)
        text = "".join(parts)
        finish = _finish(last.finish_reason)
        usage_out = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        return {
            "id": rid,
            "object": obj,
            "created": now(),
            "model": lm.id,
            "system_fingerprint": _fingerprint(lm),
            "choices": [choice],
            "usage": usage_out,
        }

    async def _sse(
        self,
        kind: Kind,
        rid: str,
        lm: LoadedModel,
        body: SamplingParams,
        first: GenerationEvent,
        events: AsyncIterator[GenerationEvent],
        t0: float,
        echo: str,
    ) -> AsyncIterator[str]:
        created = now()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        head = {
            "id": rid,
            "object": obj,
            "created": created,
            "model": lm.id,
            "system_fingerprint": _fingerprint(lm),
        }
        # Serialise the fixed part once: per-token work stays a string concatenation.
        prefix = json.dumps(head)[:-1] + ', "choices": [{"index": 0, '

        def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
            if kind == "chat":
                delta: dict[str, str] = {}
                if role:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                inner = f'"delta": {json.dumps(delta)}'
            else:
                inner = f'"text": {json.dumps(text or "")}'
            return prefix + inner + f', "logprobs": null, "finish_reason": {json.dumps(finish)}}}]}}'

        t_first: float | None = None
        last = first
        try:
            if kind == "chat":
                yield chunk("", None, role=True)
            elif echo:
                yield chunk(echo, None)
            ev: GenerationEvent | None = first
            while ev is not None:
                if ev.text:
                    if t_first is None:
                        t_first = time.perf_counter()
                    yield chunk(ev.text, None)
                last = ev
                ev = await anext(events, None)
            _check_complete(last)
            yield chunk(None if kind == "chat" else "", _finish(last.finish_reason))
            usage = last.usage or Usage(0, 0)
            self._observe(lm, usage, t0, t_first)
            if body.include_usage:
                tail = dict(
                    head,
                    choices=[],
                    usage={
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.total_tokens,
                    },
                )
                yield json.dumps(tail)
            yield "[DONE]"
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # sets the cancel flag when the client left
            self._done(lm)

    # -- embeddings --------------------------------------------------------------------------------------------
    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        self._check_task(body.model, "embeddings")
        lm = await self.manager.get(body.model)
        native = lm.engine.info.extra.get("dimensions")
        if body.dimensions is not None and isinstance(native, int):
            _check_dimensions(lm, body.dimensions, native)
        texts, fmt, engine = body.texts, body.encoding_format, lm.engine

        def embed_and_count() -> tuple[list[list[float] | str], int, int]:
            # One job on the engine thread: the tokenizer is the engine's and is not thread-safe, and counting
            # or encoding a big input on the event loop would stall every other request.
            vectors = engine.embed(texts)
            count = getattr(engine, "count_text_tokens", None)
            tokens = int(count(texts)) if callable(count) else sum(len(t.split()) for t in texts)
            size = len(vectors[0]) if vectors else 0
            return [_encode(v, fmt) for v in vectors], tokens, size

        lm.active += 1
        try:
            encoded, tokens, size = await lm.worker.call(embed_and_count)
        finally:
            self._done(lm)
        if body.dimensions is not None and not isinstance(native, int):
            _check_dimensions(lm, body.dimensions, size)
        self.metrics.tokens.labels(lm.spec.alias, "in").inc(tokens)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(encoded)]
        return {
            "object": "list",
            "data": data,
            "model": lm.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _encode(vec: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vec
    import base64

    import numpy as np

    return base64.b64encode(np.asarray(vec, dtype=np.float32).tobytes()).decode()


def _check_dimensions(lm: LoadedModel, asked: int, native: int) -> None:
    """Only the model's own size: these models are not Matryoshka-trained, so a cut vector would be a bad one."""
    if asked != native:
        raise InvalidRequest(
            f"{lm.spec.alias} returns {native}-dimensional embeddings; dimensions={asked} is not supported "
            f"(send {native} or leave it out)",
            param="dimensions",
        )


def _check_complete(last: GenerationEvent) -> None:
    """A cancelled generation whose caller still listens (the worker's error was lost, or a new cancel path)
    must not pass for a finished answer."""
    if last.finish_reason == "cancelled":
        raise EngineError("the generation was cancelled before it finished", code="cancelled")


def _finish(reason: str | None) -> str:
    # "cancelled" never gets here (_check_complete); anything else unknown reads as a stop.
    return "length" if reason == "length" else "stop"


def _fingerprint(lm: LoadedModel) -> str:
    return f"lokal-{lm.variant.engine}-{lm.variant.id}"
