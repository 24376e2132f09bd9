"""What the API's decoding features cost: decode tok/s with each one, as a ratio to plain sampling, in one run.

Rows, each on the same synthetic real-shaped model and thread count, rounds alternating (each round starting at
another row) so that machine noise hits every row alike:
- plain: temperature 0.7, top_p 0.95 (lokal's default chain);
- json_schema: output constrained by the grammar lokal builds for a response_format json_schema;
- tool call: a forced (named) function call, constrained by the tools' grammar;
- logprobs=5: the sampled token's logprob and the 5 best alternatives per token (a log-softmax over the vocab);
- penalties: presence and frequency penalties plus a logit_bias.

A grammar is checked on the token the free chain draws, and only a rejected draw pays for the grammar over the
whole vocabulary (as in llama-server). Random weights make that the worst case: the free draw fits the tool
call's grammar for about one token in three (41 of 64 tokens redrawn, against 10 for json_schema); a trained
model mostly draws what the grammar allows, so these rows bound the cost from above.

Decode tok/s counts tokens after the first over the time after the first; a constrained answer that closes
early still counts its own tokens (at least MIN_TOKENS, else the round is discarded).

    python benchmarks/bench_sampling.py [--like qwen2.5-0.5b] [--quant q4_0] [--tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import synthetic_model  # noqa: E402
from lokal.catalog.spec import ModelSpec, Variant  # noqa: E402
from lokal.engines.base import ChatMessage, GenerationRequest  # noqa: E402
from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine  # noqa: E402

MIN_TOKENS = 8
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rating": {"type": "integer"},
    },
    "required": ["title", "tags", "rating"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a word up.", "parameters": SCHEMA}}]


def rows(base: GenerationRequest) -> dict[str, GenerationRequest]:
    from lokal.toolcalls import json_schema_grammar, tool_constraint

    grammar, _ = tool_constraint("hermes", TOOLS, {"type": "function", "function": {"name": "lookup"}})
    return {
        "plain": base,
        "json_schema": replace(base, grammar=json_schema_grammar(SCHEMA)),
        "tool call": replace(base, grammar=grammar, tools=TOOLS),
        "logprobs=5": replace(base, logprobs=5),
        "penalties": replace(base, presence_penalty=0.5, frequency_penalty=0.5, logit_bias={300: 2.0, 301: -2.0}),
    }


def decode_tps(engine: BatchedLlamaCppEngine, req: GenerationRequest) -> tuple[float, int] | None:
    first = last = 0.0
    n = 0
    for ev in engine.generate(req, threading.Event()):
        if ev.text:
            now = time.perf_counter()
            first = first or now
            last = now
        if ev.usage is not None:
            n = ev.usage.completion_tokens
    if n < MIN_TOKENS or last <= first:
        return None
    return (n - 1) / (last - first), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", default="qwen2.5-0.5b")
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    path = synthetic_model(args.like, args.quant)
    variant = Variant(id=f"{args.like}:bench", path=str(path))
    spec = ModelSpec(alias=args.like, context_length=4096, variants=[variant], chat_template="chatml")
    engine = BatchedLlamaCppEngine(n_threads=args.threads, parallel=1)
    engine.load(spec, variant, path)
    base = GenerationRequest(
        messages=(ChatMessage("user", "Describe a book you like as JSON."),),
        max_tokens=args.tokens,
        temperature=0.7,
        seed=1,
    )
    cases = rows(base)
    for req in cases.values():  # warm-up: grammar compile, first-touch of the weights
        decode_tps(engine, replace(req, max_tokens=4))
    seen: dict[str, list[float]] = {name: [] for name in cases}
    counts: dict[str, list[int]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(args.rounds):
        # Each round starts at another row, so no row always runs first (after a cold cache or another's prompt).
        for name in names[r % len(names) :] + names[: r % len(names)]:
            req = cases[name]
            got = decode_tps(engine, replace(req, seed=r + 1))
            if got is not None:
                seen[name].append(got[0])
                counts[name].append(got[1])
    engine.unload()

    plain = statistics.median(seen["plain"])
    print(f"\n{args.like} {args.quant} (SYNTHETIC random weights), {args.threads} threads, {args.rounds} rounds")
    print(f"{'row':<12} {'decode tok/s':>13} {'vs plain':>9} {'tokens':>7}")
    for name, values in seen.items():
        if not values:
            print(f"{name:<12} {'-':>13} {'-':>9}   (every round ended before {MIN_TOKENS} tokens)")
            continue
        med = statistics.median(values)
        print(f"{name:<12} {med:>13.1f} {med / plain:>8.2f}x {statistics.median(counts[name]):>7.0f}")


if __name__ == "__main__":
    main()
