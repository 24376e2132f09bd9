"""The batched llama.cpp engine on the real runtime: same text as one at a time, prefix reuse, chunked prompts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import ChatMessage, GenerationEvent, GenerationRequest
from lokal.engines.llamacpp import LlamaCppEngine
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine, BatchSequence
from lokal.errors import ContextLengthExceeded
from lokal.gguf.kv_cache import gguf_kv_bytes

Result = tuple[str, str | None, int]
E = TypeVar("E", bound=LlamaCppEngine)


def _load(engine: E, path: Path, context: int = 2048) -> E:
    variant = Variant(id="m:1", path=str(path))
    engine.load(ModelSpec(alias="m", context_length=context, variants=[variant]), variant, path)
    return engine


@pytest.fixture
def batched(tiny_gguf: Path) -> Iterator[BatchedLlamaCppEngine]:
    engine = BatchedLlamaCppEngine(parallel=4)
    _load(engine, tiny_gguf)
    yield engine
    engine.unload()


def _result(events: list[GenerationEvent]) -> Result:
    last = events[-1]
    assert last.usage is not None
    return "".join(e.text for e in events), last.finish_reason, last.usage.completion_tokens


def _alone(engine: LlamaCppEngine, req: GenerationRequest) -> Result:
    return _result(list(engine.generate(req, threading.Event())))


def _together(engine: BatchedLlamaCppEngine, reqs: list[GenerationRequest]) -> list[Result]:
    """All requests through the step loop, joining as slots free up (more requests than slots)."""
    events: dict[int, list[GenerationEvent]] = {i: [] for i in range(len(reqs))}
    waiting = list(range(len(reqs)))
    active: dict[int, BatchSequence] = {}
    while waiting or active:
        while waiting and engine.free_slots:
            i = waiting.pop(0)
            active[i] = engine.open(reqs[i])
        engine.step()
        for i, seq in list(active.items()):
            events[i].extend(seq.take_events())
            if seq.done:
                engine.close(seq)
                del active[i]
    return [_result(events[i]) for i in range(len(reqs))]


def _mixed() -> list[GenerationRequest]:
    """Different prompt lengths (one longer than a prefill chunk), output lengths and sampling settings."""
    reqs = [
        GenerationRequest(messages=[ChatMessage("user", f"question {i}: " + "tell me more " * (i * 9))],
                          max_tokens=6 + 7 * i, temperature=0)
        for i in range(5)
    ]
    reqs.append(GenerationRequest(prompt="Once upon a time", max_tokens=15, temperature=0.9, top_p=0.9, seed=11))
    reqs.append(GenerationRequest(prompt="Once upon a time", max_tokens=15, temperature=1.2, seed=12))
    return reqs


def test_one_request_matches_the_single_stream_engine(tiny_gguf: Path, batched: BatchedLlamaCppEngine) -> None:
    assert batched.batched and batched.slots == 4
    single = _load(LlamaCppEngine(), tiny_gguf)
    try:
        for req in _mixed():
            assert _alone(batched, req) == _alone(single, req)
    finally:
        single.unload()


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_concurrent_requests_give_the_text_they_give_alone(
    quant: str, tiny_gguf: Path, tiny_gguf_q8: Path
) -> None:
    path = tiny_gguf if quant == "f32" else tiny_gguf_q8
    reqs = _mixed()
    alone_engine = _load(BatchedLlamaCppEngine(parallel=4), path)
    together_engine = _load(BatchedLlamaCppEngine(parallel=4), path)
    try:
        alone = [_alone(alone_engine, r) for r in reqs]
        together = _together(together_engine, reqs)
        assert together == alone
        assert {n for _, _, n in alone} == {r.max_tokens for r in reqs}  # every request ran to its own length
        assert max(together_engine.recent_batch_sizes) == 4  # they really shared steps
    finally:
        alone_engine.unload()
        together_engine.unload()


def test_long_prompt_is_read_in_chunks_while_others_keep_generating(batched: BatchedLlamaCppEngine) -> None:
    short = batched.open(GenerationRequest(prompt="hi", max_tokens=200, temperature=0))
    batched.step()  # short has read its prompt and sampled its first token
    assert short.take_events()
    long = batched.open(GenerationRequest(prompt="tell me more " * 150, max_tokens=4, temperature=0))
    assert long.prompt_tokens > 4 * 64
    steps_reading = 0
    while long.pending:
        batched.step()
        steps_reading += 1
        assert short.take_events(), "the generating request stalled while a long prompt was read"
    assert steps_reading >= long.prompt_tokens // 64  # never more than one chunk per step
    batched.close(short)
    batched.close(long)


def test_shared_prefix_is_served_from_a_slots_cache(tiny_gguf: Path, batched: BatchedLlamaCppEngine) -> None:
    system = ChatMessage("system", "You are a careful assistant. " * 20)
    first = GenerationRequest(messages=[system, ChatMessage("user", "first")], max_tokens=5, temperature=0)
    second = GenerationRequest(messages=[system, ChatMessage("user", "second")], max_tokens=5, temperature=0)
    _alone(batched, first)
    assert batched.prefix_reused_tokens == 0
    got = _alone(batched, second)
    prefix = batched.count_tokens(GenerationRequest(messages=[system]))
    assert batched.prefix_reused_tokens >= prefix - 8  # the system prompt came from cache
    fresh = _load(BatchedLlamaCppEngine(parallel=4), tiny_gguf)
    try:
        assert got == _alone(fresh, second)  # ... and changed nothing
        assert _alone(batched, second) == got  # the exact same prompt again: all but its last token reused
    finally:
        fresh.unload()


def test_cancelled_sequence_frees_its_slot(batched: BatchedLlamaCppEngine) -> None:
    cancel = threading.Event()
    gen = batched.generate(GenerationRequest(prompt="go", max_tokens=500, temperature=0), cancel)
    next(gen)
    assert batched.free_slots == 3
    cancel.set()
    assert next(gen).finish_reason == "cancelled"
    gen.close()  # type: ignore[attr-defined]  # a generator: closing it runs the engine's cleanup
    assert batched.free_slots == 4


def test_each_slot_has_the_context_it_was_sized_for(batched: BatchedLlamaCppEngine) -> None:
    assert batched.info.context_length == 2048
    assert batched.info.extra["slots"] == 4
    with pytest.raises(ContextLengthExceeded):
        batched.open(GenerationRequest(prompt="x", max_tokens=2048, temperature=0))
    assert batched.free_slots == 4  # a refused request takes no slot


def test_slots_follow_the_setting_then_the_memory_budget(tiny_gguf: Path) -> None:
    kv = gguf_kv_bytes({"general.architecture": "llama", "llama.block_count": "2", "llama.attention.head_count": "4",
                        "llama.attention.head_count_kv": "2", "llama.embedding_length": "64"}, 2048)
    assert BatchedLlamaCppEngine(parallel=3).plan_slots(10**6, kv) == 3
    assert BatchedLlamaCppEngine(memory_budget_bytes=10**12).plan_slots(10**6, kv) == 4
    assert BatchedLlamaCppEngine(memory_budget_bytes=10**6 + 4 * kv).plan_slots(10**6, kv) == 2
    assert BatchedLlamaCppEngine(memory_budget_bytes=10**6).plan_slots(10**6, kv) == 1


def test_one_slot_is_the_single_stream_engine(tiny_gguf: Path) -> None:
    engine = _load(BatchedLlamaCppEngine(parallel=1), tiny_gguf)
    try:
        assert not engine.batched and engine.slots == 1
        req = GenerationRequest(prompt="Once upon a time", max_tokens=8, temperature=0)
        assert _alone(engine, req)[2] == 8
    finally:
        engine.unload()


def _drive(engine: BatchedLlamaCppEngine, seqs: list[BatchSequence]) -> list[Result]:
    events: list[list[GenerationEvent]] = [[] for _ in seqs]
    while not all(s.done for s in seqs):
        engine.step()
        for i, s in enumerate(seqs):
            events[i].extend(s.take_events())
    for s in seqs:
        engine.close(s)
    return [_result(e) for e in events]


SHARED = [ChatMessage("system", "You answer in riddles. " * 12), ChatMessage("user", "what walks on four legs?")]


def test_the_same_prompt_opened_together_is_read_once(tiny_gguf: Path, batched: BatchedLlamaCppEngine) -> None:
    """The n choices of one request: the second copies the first's cache once it is read (across the
    slots' separate KV streams, kv_unified off) instead of reading the prompt itself."""
    greedy = GenerationRequest(messages=SHARED, max_tokens=12, temperature=0)
    sampled = GenerationRequest(messages=SHARED, max_tokens=12, temperature=1.0, seed=5, logprobs=2)
    fresh = _load(BatchedLlamaCppEngine(parallel=4), tiny_gguf)
    try:
        alone = [_alone(fresh, greedy), _alone(fresh, sampled)]
    finally:
        fresh.unload()
    first, second = batched.open(greedy), batched.open(sampled)
    assert second.source is first and first.prompt_tokens > 64
    assert _drive(batched, [first, second]) == alone
    assert batched.prefix_reused_tokens == first.prompt_tokens - 1  # all of it but the token that gives logits
    assert second.reused == first.prompt_tokens - 1


def test_a_prompt_already_read_in_a_busy_slot_is_copied_at_once(batched: BatchedLlamaCppEngine) -> None:
    first = batched.open(GenerationRequest(messages=SHARED, max_tokens=40, temperature=0))
    while first.pending:
        batched.step()
    first.take_events()
    later = batched.open(GenerationRequest(messages=SHARED, max_tokens=6, temperature=0))
    batched.step()
    assert later.source is None and not later.pending  # copied and read its last token in one step
    assert later.reused == first.prompt_tokens - 1
    batched.close(first)
    batched.close(later)


def test_a_copy_whose_source_leaves_first_reads_the_prompt_itself(
    tiny_gguf: Path, batched: BatchedLlamaCppEngine
) -> None:
    req = GenerationRequest(messages=SHARED, max_tokens=8, temperature=0)
    first, second = batched.open(req), batched.open(req)
    assert second.source is first
    batched.close(first)  # the client left before its prompt was read
    fresh = _load(BatchedLlamaCppEngine(parallel=4), tiny_gguf)
    try:
        assert _drive(batched, [second]) == [_alone(fresh, req)]
    finally:
        fresh.unload()
    assert batched.prefix_reused_tokens == 0


def test_short_shared_prefixes_are_read_rather_than_copied(batched: BatchedLlamaCppEngine) -> None:
    a = batched.open(GenerationRequest(prompt="Once upon a time", max_tokens=4, temperature=0))
    b = batched.open(GenerationRequest(prompt="Once upon a time", max_tokens=4, temperature=0))
    assert b.source is None  # copying a whole KV stream costs more than reading a few tokens
    _drive(batched, [a, b])
