"""Protocol <-> engine: turns OpenAI requests into engine requests and engine events into typed OpenAI responses.

Errors travel as LokalError values; the app's handler turns them into OpenAI-shaped JSON, and protocol/sse.py
writes them as an error frame once a stream has started. A stream waits up to FIRST_EVENT_WAIT_S for the
engine's first event before its headers go out, so the errors that come early (a context too long, a model
unloaded) are real HTTP statuses; a longer wait (a queue, a long prompt read) starts the stream anyway, and
comment frames keep the connection alive until the first token. Engine work, token counts included, runs on
the model's worker thread, never on the event loop.

Tool calls: the model's family (lokal.toolcalls.family_for, from the catalog's template family and the
GGUF's own template) says how it writes calls; a grammar from the tools' schemas constrains decoding when a
call is forced, or lazily once the model starts one, and the family's parser reads the calls back out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Literal

from lokal.engines.base import GenerationEvent, GenerationRequest, TokenLogprob
from lokal.errors import InvalidRequest
from lokal.protocol import outputs as out
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.chunks import ChatChunks, CompletionChunks
from lokal.protocol.common import SamplingParams, new_id, now
from lokal.protocol.completions import CompletionRequest
from lokal.protocol.embeddings import EmbeddingRequest
from lokal.protocol.logprobs import chat_logprobs, completion_logprobs
from lokal.protocol.outcome import ManagedStream, Outcome
from lokal.protocol.sse import Item
from lokal.runtime.manager import LoadedModel, ModelManager
from lokal.runtime.metrics import Metrics
from lokal.server.choices import ChoiceReader, ToolPlan
from lokal.server.streaming import Choice, chat_items, completion_items, merged
from lokal.toolcalls import family_for, tool_constraint

Kind = Literal["chat", "completion"]
FIRST_EVENT_WAIT_S = 1.0  # how long a stream waits for the engine before its headers go out anyway


@dataclass(slots=True)
class _Whole:
    text: str
    logprobs: list[TokenLogprob]
    offsets: list[int]


class Serving:
    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics

    # -- chat / completions ------------------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest) -> Outcome:
        return await self._generate("chat", body, body.to_engine(body.requested_max_tokens), chat=body)

    async def completion(self, body: CompletionRequest) -> Outcome:
        echo = body.prompt_text if body.echo else ""
        return await self._generate("completion", body, body.to_engine(body.max_tokens), echo=echo)

    def _check_task(self, name: str, task: str) -> None:
        """Refuse the wrong kind of model before paying for its load."""
        spec, _ = self.manager.resolve(name)
        if spec.task != task:
            if spec.task == "embeddings":
                raise InvalidRequest(f"{spec.alias} is an embeddings model; use /v1/embeddings", param="model")
            raise InvalidRequest(f"{spec.alias} is not an embeddings model; try all-minilm-l6-v2", param="model")

    async def _generate(
        self,
        kind: Kind,
        body: SamplingParams,
        req: GenerationRequest,
        echo: str = "",
        chat: ChatCompletionRequest | None = None,
    ) -> Outcome:
        """`echo`: text the answer starts with (the prompt, for completions with echo=true)."""
        self._check_task(body.model, "chat-completion")
        lm = await self.manager.get(body.model)
        plan = None
        if chat is not None and req.tools:
            req, plan = tool_plan(lm, chat, req)
        reqs = fan_out(req, body.n)
        lm.active += 1
        self.metrics.queue_depth.labels(lm.spec.alias).set(lm.worker.depth + len(reqs))
        t0 = time.perf_counter()
        choices = []
        for i, r in enumerate(reqs):
            events = lm.worker.generate(r)
            reader = ChoiceReader(i, plan, len(echo), streaming=body.stream)
            choices.append(Choice(reader, asyncio.ensure_future(anext(events)), events))
        rid = new_id("chatcmpl" if kind == "chat" else "cmpl")
        try:
            if body.stream:
                await _prime(choices)
                return Outcome(stream=self._stream(kind, rid, lm, body, choices, t0, echo), model_id=lm.id)
            wholes = await _gather(choices, echo)
        except BaseException:
            await self._release(lm, choices)
            raise
        await self._release(lm, choices)
        return Outcome(body=self._body(kind, rid, lm, req, choices, wholes, t0), model_id=lm.id)

    async def _release(self, lm: LoadedModel, choices: list[Choice]) -> None:
        try:
            for c in choices:
                await c.close()
        finally:
            self._done(lm)

    def _done(self, lm: LoadedModel) -> None:
        lm.active -= 1
        lm.touch()
        self.metrics.queue_depth.labels(lm.spec.alias).set(lm.worker.depth)

    def _observe(self, lm: LoadedModel, usage: out.Usage, t0: float, t_first: float | None) -> None:
        alias = lm.spec.alias
        if t_first is not None:
            self.metrics.ttft.labels(alias).observe(t_first - t0)
        self.metrics.tokens.labels(alias, "in").inc(usage.prompt_tokens)
        self.metrics.tokens.labels(alias, "out").inc(usage.completion_tokens)
        elapsed = time.perf_counter() - (t_first or t0)
        if usage.completion_tokens > 1 and elapsed > 0:
            self.metrics.tps.labels(alias).observe((usage.completion_tokens - 1) / elapsed)

    def _body(
        self,
        kind: Kind,
        rid: str,
        lm: LoadedModel,
        req: GenerationRequest,
        choices: list[Choice],
        wholes: list[_Whole],
        t0: float,
    ) -> out.ChatCompletion | out.Completion:
        usage = _usage(choices)
        self._observe(lm, usage, t0, choices[0].t_first)
        created, fingerprint = now(), _fingerprint(lm)
        wants_logprobs = req.logprobs is not None
        if kind == "completion":
            return out.Completion(
                id=rid,
                created=created,
                model=lm.id,
                system_fingerprint=fingerprint,
                choices=[
                    out.CompletionChoice(
                        index=c.index,
                        text=w.text,
                        logprobs=completion_logprobs(w.logprobs, w.offsets) if wants_logprobs else None,
                        finish_reason=c.reader.finish_reason(),
                    )
                    for c, w in zip(choices, wholes, strict=True)
                ],
                usage=usage,
            )
        answers = []
        for c, w in zip(choices, wholes, strict=True):
            content, calls = c.reader.whole(w.text)
            tool_calls = [
                out.ToolCall(id=t.id, function=out.FunctionCall(name=t.name, arguments=t.arguments)) for t in calls
            ]
            answers.append(
                out.ChatChoice(
                    index=c.index,
                    message=out.ChatMessage(content=content, tool_calls=tool_calls or None),
                    logprobs=chat_logprobs(w.logprobs) if wants_logprobs else None,
                    finish_reason=c.reader.finish_reason(),
                )
            )
        return out.ChatCompletion(
            id=rid, created=created, model=lm.id, system_fingerprint=fingerprint, choices=answers, usage=usage
        )

    def _stream(
        self,
        kind: Kind,
        rid: str,
        lm: LoadedModel,
        body: SamplingParams,
        choices: list[Choice],
        t0: float,
        echo: str,
    ) -> ManagedStream:
        chunks: ChatChunks | CompletionChunks
        if kind == "chat":
            chunks = ChatChunks(rid, now(), lm.id, _fingerprint(lm))
            parts = [chat_items(chunks, c) for c in choices]
        else:
            chunks = CompletionChunks(rid, now(), lm.id, _fingerprint(lm))
            parts = [completion_items(chunks, c, echo) for c in choices]

        async def run() -> AsyncGenerator[Item, None]:
            items = merged(parts)
            try:
                async for item in items:
                    yield item
                usage = _usage(choices)
                self._observe(lm, usage, t0, choices[0].t_first)
                if body.include_usage:
                    yield chunks.usage(usage)
            finally:
                await items.aclose()
                await stream.finish()

        stream = ManagedStream(run(), lambda: self._release(lm, choices))
        return stream

    # -- embeddings --------------------------------------------------------------------------------------------
    async def embeddings(self, body: EmbeddingRequest) -> out.EmbeddingList:
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
        return out.EmbeddingList(
            data=[out.Embedding(index=i, embedding=v) for i, v in enumerate(encoded)],
            model=lm.id,
            usage=out.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


def tool_plan(
    lm: LoadedModel, body: ChatCompletionRequest, req: GenerationRequest
) -> tuple[GenerationRequest, ToolPlan]:
    """The request with the grammar for the model's tool-call family, and how to read the calls back."""
    parallel = body.parallel_tool_calls is not False
    extra = lm.engine.info.extra
    if extra.get("upstream"):  # an API upstream reads its model's calls itself (tools go as they came)
        return req, ToolPlan(None, req.tools, parallel)
    if "tool_format" in extra:  # the engine read its model's own template: it knows
        fmt = extra["tool_format"]
        family = fmt if isinstance(fmt, str) else None
    else:
        family = family_for(lm.spec.chat_template, None)
    if family is None:
        raise InvalidRequest(
            f"{lm.spec.alias} has no tool-call format lokal can read (its chat template is none of the tool "
            "families: Hermes/Qwen, Llama 3, Mistral, Phi-4, gpt-oss); send the request without tools, or "
            "pick a model that calls tools",
            param="tools",
        )
    grammar, triggers = tool_constraint(family, req.tools, body.choice, parallel=parallel)
    return replace(req, grammar=grammar, grammar_triggers=triggers), ToolPlan(family, req.tools, parallel)


def fan_out(req: GenerationRequest, n: int) -> list[GenerationRequest]:
    """n choices as n engine requests; a seeded request stays repeatable with seed, seed+1, ... per choice."""
    if n == 1:
        return [req]
    if req.seed is None:
        return [req] * n
    return [replace(req, seed=(req.seed + i + 2**63) % 2**64 - 2**63) for i in range(n)]  # stays an int64


async def _prime(choices: list[Choice]) -> None:
    """Wait a little for the first events, so that early engine errors are HTTP errors."""
    firsts = [c.first for c in choices]
    done, _ = await asyncio.wait(firsts, timeout=FIRST_EVENT_WAIT_S, return_when=asyncio.FIRST_EXCEPTION)
    for f in firsts:
        if f in done and not f.cancelled() and f.exception() is not None:
            raise f.exception()  # type: ignore[misc]


async def _whole(c: Choice, echo: str) -> _Whole:
    parts, logprobs, offsets = [echo], list[TokenLogprob](), list[int]()
    ev: GenerationEvent | None = await c.first
    while ev is not None:
        if c.t_first is None and ev.text:
            c.t_first = time.perf_counter()
        step = c.reader.step(ev)
        parts.append(ev.text)
        logprobs.extend(step.logprobs)
        offsets.extend(step.offsets)
        ev = await anext(c.events, None)
    c.reader.check_complete()
    return _Whole("".join(parts), logprobs, offsets)


async def _gather(choices: list[Choice], echo: str) -> list[_Whole]:
    if len(choices) == 1:
        return [await _whole(choices[0], echo)]
    tasks = [asyncio.ensure_future(_whole(c, echo)) for c in choices]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _usage(choices: list[Choice]) -> out.Usage:
    """The prompt counts once (every choice read the same one); generated tokens add up."""
    return out.Usage.of(choices[0].reader.usage.prompt_tokens, sum(c.reader.usage.completion_tokens for c in choices))


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


def _fingerprint(lm: LoadedModel) -> str:
    return f"lokal-{lm.variant.engine}-{lm.variant.id}"
