"""Continuous batching on llama.cpp: several requests share one loaded model, one decode step for all of them.

The context holds `slots` KV streams (n_seq_max = slots, kv_unified off), so each slot owns n_ctx/slots cells
and one long chat cannot take cache from the others. A step is one llama_batch: the next token of every
sequence that is generating, plus a bounded chunk of prompt for sequences still reading theirs (so a long
prompt delays the others by one chunk, not by its whole length). Steps are paced to about LOKAL_PREFILL_SECONDS,
or SOLO_PREFILL_SECONDS when one prompt has the batch to itself, so a request cancelled while its prompt is read
leaves within that.
One llama_decode runs them all; then each sequence samples from its own logits row with its own sampler chain
(the single-stream engine's: llama_sampling.RequestSampler). Requests join and leave between steps; a slot keeps
its last tokens in cache, so a later request that starts the same way (the same system prompt, the next turn of
a chat) only decodes what is new. A request whose prompt another running request is reading or has read (the
n choices of one request, a burst of the same prompt) copies that slot's cache once it is read instead of
reading the prompt again.

With one slot (LOKAL_PARALLEL=1, an embeddings model, or a memory budget with no room for more) this engine is
exactly the single-stream LlamaCppEngine.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import (
    DEFAULT_MAX_CONTEXT,
    DEFAULT_MIN_SHARED_PREFIX,
    DEFAULT_PREFILL_CHUNK,
    DEFAULT_PREFILL_SECONDS,
)
from lokal.engines.base import EngineInfo, FinishReason, GenerationEvent, GenerationRequest, TopLogprob, Usage
from lokal.engines.llama_sampling import RequestSampler
from lokal.engines.llamacpp import (
    LlamaCppEngine,
    PrefillPacer,
    import_llama_cpp,
)
from lokal.engines.textstream import TokenStream
from lokal.errors import EngineError, InvalidRequest
from lokal.gguf.kv_cache import gguf_kv_bytes
from lokal.hardware import default_threads

DEFAULT_SLOTS = 4  # CPU decode is compute-bound past a few sequences; more slots mostly add latency
N_BATCH = 512  # most tokens one llama_decode takes (prompt chunks when nobody else is generating)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(eq=False, slots=True)
class BatchSequence:
    """One request in a slot: its prompt still to read, its sampler, and the events of the last step."""

    req: GenerationRequest
    slot: int
    prompt: list[int]
    pending: list[int]  # prompt tokens not decoded yet
    kv: list[int]  # tokens in this slot's KV cache, in position order
    max_tokens: int
    stream: TokenStream
    sampler: RequestSampler
    reused: int = 0  # prompt tokens found in the slot's cache or copied from another slot
    source: BatchSequence | None = None  # the running sequence whose cache this one copies, once it is read
    shared: int = 0  # how many of the prompt's tokens that copy brings
    n_out: int = 0
    next_token: int | None = None  # sampled, to be decoded in the next step
    logit_row: int = -1  # batch row whose logits this sequence samples from after the current decode
    finish: FinishReason | None = None
    events: list[GenerationEvent] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.finish is not None

    def take_events(self) -> list[GenerationEvent]:
        out, self.events = self.events, []
        return out

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.n_out)


class BatchedLlamaCppEngine(LlamaCppEngine):
    def __init__(
        self,
        *,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_ctx: int | None = None,
        parallel: int | None = None,
        memory_budget_bytes: int | None = None,
        max_context: int = DEFAULT_MAX_CONTEXT,
        prefill_seconds: float = DEFAULT_PREFILL_SECONDS,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,  # prompt tokens per step while others generate
        min_shared_prefix: int = DEFAULT_MIN_SHARED_PREFIX,  # fewer shared tokens are read, not copied
        n_batch: int = N_BATCH,
    ) -> None:
        super().__init__(
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
            n_ctx=n_ctx,
            max_context=max_context,
            prefill_seconds=prefill_seconds,
        )
        self._parallel = parallel
        self._budget = memory_budget_bytes
        self._prefill_chunk = max(1, prefill_chunk)
        self._min_shared_prefix = min_shared_prefix
        self._n_batch = max(16, n_batch)
        self._pacer = PrefillPacer(prefill_seconds, most=self._n_batch)
        self.slots = 1
        self._ctx: Any = None  # llama_cpp._internals.LlamaContext with n_seq_max = slots
        self._batch: Any = None  # llama_cpp.llama_batch
        self._slot_kv: list[list[int]] = []
        self._free: set[int] = set()
        self._running: list[BatchSequence] = []
        # Figures for /metrics and /lokal/ps.
        self.steps = 0
        self.prefix_reused_tokens = 0
        self.recent_batch_sizes: deque[int] = deque(maxlen=64)  # sequences per decode step

    @property
    def batched(self) -> bool:
        return self._ctx is not None

    @property
    def free_slots(self) -> int:
        return len(self._free)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def plan_slots(self, model_bytes: int, kv_bytes_per_slot: int) -> int:
        """LOKAL_PARALLEL when set; else up to DEFAULT_SLOTS, while the KV caches take at most half the room
        the memory budget leaves beside the weights (the other half stays for other models)."""
        llama_cpp = import_llama_cpp()
        cap = int(llama_cpp.llama_max_parallel_sequences())
        if self._parallel:
            return max(1, min(self._parallel, cap))
        if self._budget is None:
            return DEFAULT_SLOTS
        headroom = self._budget - model_bytes
        return int(max(1, min(DEFAULT_SLOTS, cap, headroom // max(1, 2 * kv_bytes_per_slot))))

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        if spec.task == "embeddings" or self._parallel == 1:
            super().load(spec, variant, path)
            return
        llama_cpp = import_llama_cpp()
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        if path is None or not path.exists():
            raise EngineError(f"model file for {variant.id} is missing: {path}")
        set_verbose(False)  # what Llama(verbose=False) does: llama.cpp's own log stays quiet
        t0 = time.perf_counter()
        gpu_layers = self._n_gpu_layers if variant.device == "cpu" else -1
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0x7FFFFFFF if gpu_layers == -1 else gpu_layers
        try:
            model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {path.name}: {exc}") from exc
        meta = model.metadata()
        n_ctx_slot = self._n_ctx or min(spec.context_length, self._max_context)
        kv_slot = gguf_kv_bytes(meta, n_ctx_slot)
        slots = self.plan_slots(path.stat().st_size, kv_slot)
        if slots == 1:
            model.close()
            super().load(spec, variant, path)
            return
        # One thread per physical core for every step (LOKAL_N_THREADS overrides). Llama()'s default of half the
        # logical CPUs assumes hyper-threads; on 2 real cores it costs a third of single-stream speed (measured).
        threads = self._n_threads or default_threads()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx_slot * slots
        cparams.n_seq_max = slots
        cparams.n_batch = self._n_batch
        cparams.n_ubatch = self._n_batch
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = False  # a stream per slot: attention reads only its own cells
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the single-stream engine
        if hasattr(cparams, "n_outputs_max"):
            cparams.n_outputs_max = slots  # one logits row per sequence per step; saves a vocab x n_batch buffer
        try:
            ctx = _internals.LlamaContext(model=model, params=cparams, verbose=False)
        except (ValueError, RuntimeError) as exc:
            model.close()
            raise EngineError(f"llama.cpp could not create a {slots}-slot context for {path.name}: {exc}") from exc
        self._ctx = ctx
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self.slots = slots
        self._slot_kv = [[] for _ in range(slots)]
        self._free = set(range(slots))
        self._attach(spec, model, meta)
        n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(ctx.ctx))
        self.info = EngineInfo(
            memory_bytes=path.stat().st_size + gguf_kv_bytes(meta, n_ctx_seq) * slots,
            load_seconds=time.perf_counter() - t0,
            context_length=n_ctx_seq,
            extra={
                "synthetic": meta.get("lokal.synthetic") == "true",
                "gpu_layers": gpu_layers,
                "slots": slots,
                "threads": threads,
                **self.prompt_facts(),
            },
        )

    def unload(self) -> None:
        if not self.batched:
            super().unload()
            return
        llama_cpp = import_llama_cpp()
        for seq in self._running:
            seq.sampler.close()
        self._running.clear()
        if self._grammars is not None:
            self._grammars.close()
            self._grammars = None
        llama_cpp.llama_batch_free(self._batch)
        self._batch = None
        self._ctx.close()
        self._ctx = None
        if self._model is not None:
            self._model.close()
        self._model = None

    # -- sequences ---------------------------------------------------------------------------------------------
    def open(self, req: GenerationRequest) -> BatchSequence:
        """Put a request in a free slot (the one whose cache shares the longest prefix with its prompt); when a
        running sequence's prompt shares a longer one, the new sequence waits to copy that slot's cache."""
        if not self.batched:
            raise EngineError("model is not loaded with batching")
        tokens, template_stops = self._prompt(req)
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="messages")
        max_tokens = self.budget(len(tokens), req.max_tokens)
        if not self._free:
            raise EngineError("no free slot")
        sampler = self._sampler(req)  # a bad grammar or logit_bias fails here, before a slot is taken
        slot = max(self._free, key=lambda s: (common_prefix(self._slot_kv[s], tokens), -s))
        keep = min(common_prefix(self._slot_kv[slot], tokens), len(tokens) - 1)  # the last one yields logits
        source, shared = self._best_source(tokens)
        if shared - keep < self._min_shared_prefix:
            source, shared = None, 0
        llama_cpp = import_llama_cpp()
        mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        if not llama_cpp.llama_memory_seq_rm(mem, slot, keep, -1):
            llama_cpp.llama_memory_seq_rm(mem, slot, -1, -1)
            keep = 0
        seq = BatchSequence(
            req=req,
            slot=slot,
            prompt=tokens,
            pending=tokens[keep:],
            kv=tokens[:keep],
            max_tokens=max_tokens,
            stream=TokenStream([*req.stop, *template_stops]),
            sampler=sampler,
            reused=keep,
            source=source,
            shared=shared,
        )
        self._free.discard(slot)
        self._slot_kv[slot] = seq.kv
        self._running.append(seq)
        self.prefix_reused_tokens += keep
        return seq

    def _best_source(self, tokens: list[int]) -> tuple[BatchSequence | None, int]:
        """The running sequence whose prompt starts most like `tokens`, and how many tokens it would give."""
        best, shared = None, 0
        for other in self._running:
            if other.source is not None or other.done:  # it has not read its own prompt, or may go any moment
                continue
            n = min(common_prefix(other.prompt, tokens), len(tokens) - 1)
            if n > shared:
                best, shared = other, n
        return best, shared

    def _join_sources(self) -> None:
        """Sequences waiting on another slot's prompt copy its cache once it is read (or read their own prompt
        when that sequence ended first). llama.cpp copies between two slots' streams only whole, so the copy
        is cut back to the shared prefix after."""
        llama_cpp = import_llama_cpp()
        mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        for seq in self._running:
            src = seq.source
            if src is None:
                continue
            intact = self._slot_kv[src.slot] is src.kv  # the slot still holds that sequence's cache
            if intact and len(src.kv) >= seq.shared:
                llama_cpp.llama_memory_seq_cp(mem, src.slot, seq.slot, -1, -1)
                if llama_cpp.llama_memory_seq_rm(mem, seq.slot, seq.shared, -1):
                    self.prefix_reused_tokens += seq.shared - len(seq.kv)
                    seq.kv[:] = src.kv[: seq.shared]
                else:  # a cache that cannot be cut back (recurrent state): read the prompt after all
                    llama_cpp.llama_memory_seq_rm(mem, seq.slot, -1, -1)
                    self.prefix_reused_tokens -= len(seq.kv)
                    seq.kv.clear()
                seq.pending = seq.prompt[len(seq.kv) :]
                seq.reused = len(seq.kv)
                seq.source = None
            elif not intact or src.done or src not in self._running:
                seq.source = None  # it will not get that far: read the rest of the prompt here

    def close(self, seq: BatchSequence, *, failed: bool = False) -> None:
        """Free the slot. Its cache stays (prefix reuse) unless a failed decode left it uncertain."""
        if seq not in self._running:
            return
        self._running.remove(seq)
        seq.sampler.close()
        if failed:
            llama_cpp = import_llama_cpp()
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx.ctx), seq.slot, -1, -1)
            self._slot_kv[seq.slot] = []
        self._free.add(seq.slot)

    # -- one decode step ---------------------------------------------------------------------------------------
    def step(self) -> list[BatchSequence]:
        """Decode one batch; returns the sequences that produced events (text, or their end) in it."""
        llama_cpp = import_llama_cpp()
        self._join_sources()
        batch = self._batch
        n = 0

        def put(token: int, seq: BatchSequence, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = len(seq.kv)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.slot
            batch.logits[n] = logits
            seq.kv.append(token)
            n += 1

        sampling: list[BatchSequence] = []
        decoding = [s for s in self._running if s.next_token is not None]
        for seq in decoding:
            put(seq.next_token, seq, True)  # type: ignore[arg-type]
            seq.next_token = None
            seq.logit_row = n - 1
            sampling.append(seq)
        room = self._n_batch - n
        # The step's time budget (some prompt always moves); larger when no stream waits on this step.
        paced = max(self._pacer.least, self._pacer.size(solo=not decoding) - n)
        chunk_room = min(room, paced, self._prefill_chunk) if decoding else min(room, paced)
        prefilling = 0
        for seq in self._running:  # in arrival order: the oldest prompt is read first
            if not seq.pending or seq.source is not None or chunk_room <= 0:
                continue
            take = min(len(seq.pending), chunk_room)
            chunk, seq.pending = seq.pending[:take], seq.pending[take:]
            for i, token in enumerate(chunk):
                put(token, seq, not seq.pending and i == take - 1)
            chunk_room -= take
            prefilling += 1
            if not seq.pending:
                seq.logit_row = n - 1
                sampling.append(seq)
        if n == 0:
            return []
        batch.n_tokens = n
        t0 = time.perf_counter()
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc} for a batch of {n} tokens")
        self._pacer.record(n, time.perf_counter() - t0)
        self.steps += 1
        self.recent_batch_sizes.append(len(decoding) + prefilling)
        ctx, reader = self._ctx.ctx, self._logprobs
        for seq in sampling:
            token = seq.sampler.sample(ctx, seq.logit_row)
            want = seq.req.logprobs
            logprob = reader.read(ctx, seq.logit_row, token, want) if want is not None and reader else None
            seq.logit_row = -1
            self._accept(seq, token, logprob)
        return sampling

    def _accept(
        self, seq: BatchSequence, token: int, logprob: tuple[float, tuple[TopLogprob, ...]] | None = None
    ) -> None:
        """What the single-stream engine does with each token, in the same order."""
        llama_cpp = import_llama_cpp()
        if not seq.req.ignore_eos and llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
            self._finish(seq, "stop")
            return
        seq.n_out += 1
        # Tool-call markup may be control tokens ([TOOL_CALLS], <|tool_call|>, harmony's <|channel|>): with tools
        # the answer keeps them as text for serving's parser, which never lets markup reach the content.
        data = self._model.detokenize([token], special=bool(seq.req.tools))
        ev = seq.stream.feed(data) if logprob is None else seq.stream.feed(data, *logprob)
        if ev is not None:
            seq.events.append(ev)
        if seq.stream.stopped:
            self._finish(seq, "stop")
        elif seq.n_out >= seq.max_tokens:
            self._finish(seq, "length")
        else:
            seq.next_token = token

    def _finish(self, seq: BatchSequence, reason: FinishReason) -> None:
        tail = seq.stream.flush()
        if tail is not None:
            seq.events.append(tail)
        seq.events.append(GenerationEvent(finish_reason=reason, usage=seq.usage()))
        seq.finish = reason

    # -- the Engine interface ----------------------------------------------------------------------------------
    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        """One request on its own (in-process use); the batch worker drives open/step/close instead."""
        if not self.batched:
            yield from super().generate(req, cancel)
            return
        seq = self.open(req)
        failed = False
        try:
            while not seq.done:
                if cancel.is_set():
                    yield GenerationEvent(finish_reason="cancelled", usage=seq.usage())
                    return
                try:
                    self.step()
                except EngineError:
                    failed = True
                    raise
                yield from seq.take_events()
        finally:
            self.close(seq, failed=failed)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.batched:
            alias = self._spec.alias if self._spec else "this model"
            raise InvalidRequest(f"{alias} is not an embeddings model; try all-minilm-l6-v2", param="model")
        return super().embed(texts)
