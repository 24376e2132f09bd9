"""Several requests at once on ONNX Runtime GenAI: its own batching (og.Engine) behind the batch worker's contract.

What og.Engine does on a CPU model from the model builder (onnxruntime-genai 0.18, measured on the test model):
it runs in *static* batching mode. Continuous (dynamic) batching needs a model exported with paged attention,
which the builder makes for CUDA fp16/bf16 only. A static batch is formed from the requests waiting when no batch
is running, at most STATIC_BATCH of them (its scheduler's fixed size, whatever max_batch_size says); every member
decodes one token per step, and a request that arrives while a batch runs waits until the whole batch has ended
(its KV cache is one allocation for the batch). Prompts of different lengths batch correctly (greedy output is
the same as alone). Per request it honours temperature, top_p, top_k, repetition penalty, a minimum length
(ignore_eos), max tokens and guidance (json mode, grammars); the static mode refuses per-request seeds and stop
strings, and exposes no logits.

So a request runs on the batch unless it needs what the batch cannot do, and then on its own Generator, one
token per step beside the batch (still concurrent, not batched): a seed with sampling (the batch cannot reseed per
request), logprobs, logit_bias, presence/frequency penalties and min_p (they read or edit each step's logits).
Stop strings are cut here, from the decoded text, on both paths. /lokal/ps shows both figures ("batching",
"batch_max", "generator_requests"); `lokal model ps` shows the slots.

A model og.Engine refuses (one whose execution provider keeps the KV cache itself) still takes several requests:
each on its own Generator, a token per step in turn; /lokal/ps says "batching": "none" and why.

og.Engine must be driven from the thread that created it, so it is created on the first call from the batch
worker's thread (and again if another thread drives an idle engine, as in-process use may).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import DEFAULT_MAX_CONTEXT
from lokal.engines.base import FinishReason, GenerationEvent, GenerationRequest, Usage
from lokal.engines.ortgenai import (
    TOP_K,
    GeneratorRun,
    LogitsEdit,
    OrtGenAIEngine,
    guidance,
    kv_cache_bytes,
    model_folder,
    refusal,
)
from lokal.engines.textstream import TokenStream
from lokal.errors import EngineError

STATIC_BATCH = 4  # onnxruntime-genai's static scheduler batches at most 4 requests (measured: 8 run as 4 + 4)
DEFAULT_SLOTS = STATIC_BATCH
# A new batch waits this long for requests that arrive together (a burst, the n choices of one request) before
# its first step: a batch cannot take members once it runs, so one that starts with the first of four requests
# leaves the other three for after it (measured: 4 streams at once 44 tok/s that way, 77 batched together).
GATHER_SECONDS = 0.025
EVENT_CAPACITY = 64  # events one og.Engine.run may hand back: a token per member, plus cancellations
BATCHING_NOTE = (
    "static batches of up to 4 (ONNX Runtime GenAI Engine); a request arriving mid-batch waits for the batch to "
    "end; seeded sampling, logprobs, logit_bias, penalties and min_p run one at a time beside it"
)

NO_ENGINE_NOTE = "no batching: each request decodes on its own Generator, a token per step in turn"


def generator_reason(req: GenerationRequest) -> str | None:
    """Why a request must run on its own Generator rather than in the static batch; None when it need not."""
    if req.logprobs is not None:
        return "logprobs"
    if LogitsEdit.needed(req):
        return "logit_bias, presence/frequency penalties or min_p"
    if req.seed is not None and req.temperature > 0:
        return "seed"  # greedy output is the same with any seed: only sampled requests need theirs
    return None


@dataclass(eq=False, slots=True)
class EngineSequence:
    """One request in og.Engine's batch (or waiting for the next one)."""

    req: GenerationRequest
    request: Any  # og.Request
    detok: Any
    stream: TokenStream
    stop_ids: frozenset[int]
    prompt_tokens: int
    max_tokens: int
    opened: float = field(default_factory=time.monotonic)
    started: bool = False  # og.Engine has scheduled it: it is in the running batch
    n_out: int = 0
    finish: FinishReason | None = None
    events: list[GenerationEvent] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.finish is not None

    def take_events(self) -> list[GenerationEvent]:
        out, self.events = self.events, []
        return out

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.n_out)

    def accept(self, token: int) -> None:
        if token in self.stop_ids:
            self.end("stop")
            return
        self.n_out += 1
        ev = self.stream.feed(self.detok.decode(token).encode("utf-8"))
        if ev is not None:
            self.events.append(ev)
        if self.stream.stopped:
            self.end("stop")
        elif self.n_out >= self.max_tokens:
            self.end("length")

    def end(self, reason: FinishReason) -> None:
        if self.finish is not None:
            return
        tail = self.stream.flush()
        if tail is not None:
            self.events.append(tail)
        self.events.append(GenerationEvent(finish_reason=reason, usage=self.usage()))
        self.finish = reason


@dataclass(eq=False, slots=True)
class GeneratorSequence:
    """One request on its own Generator, advanced a token per step beside the batch."""

    req: GenerationRequest
    run: GeneratorRun
    events: list[GenerationEvent] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.run.done

    def take_events(self) -> list[GenerationEvent]:
        out, self.events = self.events, []
        return out

    def usage(self) -> Usage:
        return Usage(self.run.prompt_tokens, self.run.n_out)


Sequence_ = EngineSequence | GeneratorSequence


class BatchedOrtGenAIEngine(OrtGenAIEngine):
    """OrtGenAIEngine with og.Engine's static batching; with one slot (LOKAL_PARALLEL=1) it is exactly that engine."""

    def __init__(
        self,
        *,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        parallel: int | None = None,
        max_context: int = DEFAULT_MAX_CONTEXT,
    ):
        super().__init__(n_threads=n_threads, n_ctx=n_ctx, max_context=max_context)
        self._parallel = parallel
        self.slots = 1
        self._engine: Any = None  # og.Engine, made on the thread that drives it
        self._owner: int | None = None
        self._buffer: Any = None
        self._running: list[Sequence_] = []
        self._no_engine: str | None = None  # why og.Engine cannot drive this model, when it cannot
        # Figures for /metrics and /lokal/ps.
        self.steps = 0
        self.prefix_reused_tokens = 0  # the static batch keeps no cache between requests
        self.recent_batch_sizes: deque[int] = deque(maxlen=64)  # sequences that got a token per step

    @property
    def batched(self) -> bool:
        return self.slots > 1 and self._model is not None

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - len(self._running))

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        super().load(spec, variant, path)
        self.slots = max(1, self._parallel or DEFAULT_SLOTS)
        if self.slots == 1 or spec.task == "embeddings":
            self.slots = 1
            return
        assert path is not None  # the base load refused a missing folder
        config = json.loads((model_folder(path) / "genai_config.json").read_text(encoding="utf-8"))
        dtype_bytes = 4 if self.info.extra.get("provider") == "cpu" else 2
        # A KV buffer per member at most (the base figure holds one).
        self.info.memory_bytes += kv_cache_bytes(config, self.info.context_length, dtype_bytes) * (self.slots - 1)
        try:  # a model og.Engine cannot drive (a stateful provider's) still serves, on Generators only
            self._og.Engine(self._model)  # made here to find out; the worker's thread makes the one it drives
            self._no_engine = None
        except RuntimeError as exc:
            self._no_engine = str(exc)
        self.info.extra.update(
            slots=self.slots,
            batching="static" if self._no_engine is None else "none",
            batch_max=min(self.slots, STATIC_BATCH) if self._no_engine is None else 1,
            batching_note=BATCHING_NOTE if self._no_engine is None else f"{NO_ENGINE_NOTE}: {self._no_engine}",
            generator_requests=0,  # requests that ran one at a time beside the batch (see generator_reason)
        )

    def unload(self) -> None:
        for seq in list(self._running):
            self.close(seq)
        self._buffer = None
        self._engine = None  # before the model it runs on
        self._owner = None
        super().unload()

    def _og_engine(self) -> Any:
        me = threading.get_ident()
        if self._engine is not None and self._owner != me:
            if any(isinstance(s, EngineSequence) for s in self._running):
                raise EngineError("onnxruntime-genai's Engine is driven from another thread")
            self._engine = self._buffer = None  # idle: this thread makes its own
        if self._engine is None:
            try:
                self._engine = self._og.Engine(self._model)
                self._buffer = self._engine.create_event_buffer(EVENT_CAPACITY)
            except RuntimeError as exc:
                raise EngineError(f"onnxruntime-genai could not create its batching Engine: {exc}") from exc
            self._owner = me
        return self._engine

    # -- sequences ---------------------------------------------------------------------------------------------
    def open(self, req: GenerationRequest) -> Sequence_:
        if not self.batched:
            raise EngineError("model is not loaded with batching")
        if self._no_engine is not None or generator_reason(req) is not None:
            seq: Sequence_ = GeneratorSequence(req, self.start(req))
            count = self.info.extra.get("generator_requests")
            self.info.extra["generator_requests"] = (count if isinstance(count, int) else 0) + 1
        else:
            seq = self._open_in_batch(req)
        self._running.append(seq)
        return seq

    def _open_in_batch(self, req: GenerationRequest) -> EngineSequence:
        tokens, max_tokens, stops = self.prepare(req)
        og = self._og
        engine = self._og_engine()
        options = og.RequestOptions()
        options.set_max_session_tokens(len(tokens) + max_tokens)
        request = engine.create_request(options=options)
        turn = og.TurnOptions(request)
        turn.set_max_generated_tokens(max_tokens)
        if req.ignore_eos:
            turn.set_min_generated_tokens(max_tokens)
        if req.temperature > 0:
            turn.set_do_sample(True)
            turn.set_temperature(req.temperature)
            turn.set_top_p(req.top_p)
            turn.set_top_k(TOP_K if req.top_k is None else req.top_k)  # 0: no cut, as on the Generator path
        else:
            turn.set_do_sample(False)
        if req.repeat_penalty != 1.0:
            turn.set_repetition_penalty(req.repeat_penalty)
        try:
            guide = guidance(req)
            if guide is not None:
                turn.set_guidance(guide[0], guide[1])
            request.begin_turn(np.asarray(tokens, dtype=np.int32), turn)
        except RuntimeError as exc:
            request.close()
            raise refusal(req, exc) from exc
        # Stop strings are cut here from the decoded text: the static Engine refuses them per request.
        return EngineSequence(
            req=req,
            request=request,
            detok=self._tokenizer.create_stream(),
            stream=TokenStream(stops),
            stop_ids=self.stop_ids(req),
            prompt_tokens=len(tokens),
            max_tokens=max_tokens,
        )

    def close(self, seq: Sequence_, *, failed: bool = False) -> None:
        """Take the request out. A member of a running static batch keeps its row until the batch ends."""
        if seq not in self._running:
            return
        self._running.remove(seq)
        if isinstance(seq, EngineSequence):
            seq.request.close()
        else:
            seq.run.close()

    def step(self) -> Sequence[Sequence_]:
        """One token for every Generator-path request, then one og.Engine step for the batch."""
        served = 0
        for seq in self._running:
            if isinstance(seq, GeneratorSequence) and not seq.done:
                seq.events.extend(seq.run.advance())
                served += 1
        members = [s for s in self._running if isinstance(s, EngineSequence) and not s.done]
        if members and not self._gathering(members, served):
            served += self._engine_step(members)
        if served:  # a step spent gathering a batch decoded nothing
            self.steps += 1
            self.recent_batch_sizes.append(served)
        return list(self._running)

    def _gathering(self, members: list[EngineSequence], busy: int) -> bool:
        """Whether a batch about to start should wait a moment for more members (see GATHER_SECONDS)."""
        if busy or len(members) >= min(self.slots, STATIC_BATCH) or any(s.started for s in members):
            return False
        left = GATHER_SECONDS - (time.monotonic() - min(s.opened for s in members))
        if left <= 0:
            return False
        time.sleep(min(left, 0.005))  # the worker admits new arrivals before the next step
        return True

    def _engine_step(self, members: list[EngineSequence]) -> int:
        og, engine, buffer = self._og, self._og_engine(), self._buffer
        if not engine.has_pending_requests():
            for member in members:  # cannot happen while og holds their turns; never leave a caller waiting
                member.end("error")
            return 0
        try:
            engine.run(buffer)
        except RuntimeError as exc:
            raise EngineError(f"onnxruntime-genai failed while generating: {exc}") from exc
        token_flag = int(og.EngineEventFlags.TOKEN)
        none, served = og.FinishReason.NONE, set[int]()
        for i in range(len(buffer)):
            ev = buffer[i]
            seq = next((s for s in members if s.request is ev.request), None)
            if seq is None or seq.done:
                continue  # a request closed after this step began, or one that already ended here
            seq.started = True
            token = ev.token
            if token is not None and int(ev.flags) & token_flag:
                served.add(id(seq))
                seq.accept(int(token))
            reason = ev.finish_reason
            if reason != none and not seq.done:
                if reason == og.FinishReason.FAILED:
                    raise EngineError(f"onnxruntime-genai failed while generating: {ev.error_code.name}")
                seq.end(self._finish_reason(og, reason))
        return len(served)

    @staticmethod
    def _finish_reason(og: Any, reason: Any) -> FinishReason:
        if reason in (og.FinishReason.EOS, og.FinishReason.STOP_STRING):
            return "stop"
        if reason == og.FinishReason.CANCELLED:
            return "cancelled"
        return "length"  # max generated tokens, or the session's token cap (prompt + budget)

    # -- the Engine interface ----------------------------------------------------------------------------------
    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        """One request on its own (in-process use); the batch worker drives open/step/close instead."""
        if not self.batched:
            yield from super().generate(req, cancel)
            return
        seq = self.open(req)
        try:
            while not seq.done:
                if cancel.is_set():
                    yield GenerationEvent(finish_reason="cancelled", usage=seq.usage())
                    return
                self.step()
                yield from seq.take_events()
            yield from seq.take_events()
        finally:
            self.close(seq)
