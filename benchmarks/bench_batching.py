"""Continuous batching: aggregate output tokens/s with 1, 2, 4, 8 concurrent streams, lokal vs llama-cpp-python.

lokal serves the N streams from one loaded model with batched decoding (LOKAL_PARALLEL slots). llama-cpp-python's
high-level Llama runs one completion at a time, so N streams there are N sequential runs; its figures are
measured on the same file with the same thread count, in this process. Ratios are to each side's own single
stream. Also printed: TTFT p50/p95 under each load, server CPU-seconds per token (steadier than wall time on a
shared machine), a prefix-reuse check (same long system prompt twice) and a fairness check (the longest pause
of running streams while a long prompt joins).

    python benchmarks/bench_batching.py [--tokens 64] [--rounds 3] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.models import tiny_entry, write_catalog  # noqa: E402
from tests.support.server import LokalServer  # noqa: E402

from benchmarks._common import pct, synthetic_model  # noqa: E402

LEVELS = (1, 2, 4, 8)
QUESTION = "Explain in a few sentences how a lighthouse keeper spends a long winter night, request {i}."


@dataclass
class Stream:
    ttft: float  # seconds from sending to the first text
    tokens: int
    end: float  # seconds from the start of the round to the last token
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive text chunks


@dataclass
class Level:
    n: int
    agg_tps: list[float] = field(default_factory=list)  # per round: all output tokens / round wall time
    decode_tps: list[float] = field(default_factory=list)  # per round: tokens after the first / decode time
    ttft: list[float] = field(default_factory=list)
    cpu_per_token_ms: list[float] = field(default_factory=list)


def chat_stream(base: str, messages: list[dict[str, str]], tokens: int, t_round: float) -> Stream:
    body = {"model": "bench", "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = 0.0
    gaps: list[float] = []
    n = 0
    with httpx.stream("POST", base + "/chat/completions", json=body, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            data = json.loads(line[5:])
            if data.get("usage"):
                n = data["usage"]["completion_tokens"]
            if data["choices"] and data["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                if not first:
                    first = now
                else:
                    gaps.append(now - last)
                last = now
    return Stream(first - t0, n, last - t_round, gaps)


def lokal_level(base: str, pid: int, n: int, tokens: int, tag: str) -> tuple[float, float, list[float], float]:
    """One round of n concurrent streams: (aggregate tok/s, decode-phase aggregate tok/s, TTFTs, server CPU ms
    per output token). The decode phase runs from the last first token to the last token: all n decode."""
    proc = psutil.Process(pid)
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as pool:
        streams = list(pool.map(
            lambda i: chat_stream(base, [{"role": "user", "content": f"[{tag}] " + QUESTION.format(i=i)}],
                                  tokens, t0),
            range(n),
        ))
    wall = max(s.end for s in streams)
    out = sum(s.tokens for s in streams)
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    decode = wall - max(s.end - sum(s.gaps) for s in streams)
    return out / wall, (out - n) / decode, [s.ttft for s in streams], cpu * 1000 / out


def llama_cpp_level(llm: Any, n: int, tokens: int, tag: str) -> tuple[float, float, list[float], float]:
    """N streams through llama-cpp-python's Llama: one after another; TTFT as if all N arrived at once."""
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ttfts = []
    out = 0
    decode = 0.0
    for i in range(n):
        llm.reset()
        t_req = time.perf_counter()
        first = 0.0
        for chunk in llm.create_chat_completion(
            [{"role": "user", "content": f"[{tag}] " + QUESTION.format(i=i)}],
            max_tokens=tokens, temperature=0, stream=True,
        ):
            if chunk["choices"][0]["delta"].get("content"):
                out += 1
                if not first:
                    first = time.perf_counter()
        decode += time.perf_counter() - first
        ttfts.append(first - t_req + (t_req - t0))  # waiting for the earlier ones counts
    wall = time.perf_counter() - t0
    return out / wall, (out - n) / decode, ttfts, (time.process_time() - cpu0) * 1000 / out


def prefix_reuse(base: str, tokens: int) -> dict[str, float]:
    system = "You are the assistant of a lighthouse museum. " + "Visitors ask about lamps, lenses and keepers. " * 40
    ttft = []
    for i, user in enumerate(("What is a Fresnel lens?", "Who kept the light in winter?")):
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ttft.append(chat_stream(base, msgs, tokens, time.perf_counter()).ttft)
        if i == 0:
            time.sleep(0.2)
    return {"cold_ttft_s": ttft[0], "warm_ttft_s": ttft[1], "speedup": ttft[0] / ttft[1]}


def fairness(base: str, tokens: int) -> dict[str, float]:
    """Three streams decode; a ~1500-token prompt joins. How long did the running streams pause?"""
    long_prompt = "Here is a long document about lighthouses and their keepers. " * 50  # ~1450 tokens
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(4) as pool:
        runners = [pool.submit(chat_stream, base, [{"role": "user", "content": f"[fair] {QUESTION.format(i=i)}"}],
                               tokens * 3, t0) for i in range(3)]
        time.sleep(1.0)
        long = pool.submit(chat_stream, base, [{"role": "user", "content": long_prompt}], 8, t0)
        streams = [r.result() for r in runners]
        joined = long.result()
    gaps = sorted(g for s in streams for g in s.gaps)
    return {"long_prompt_ttft_s": joined.ttft, "runner_gap_p50_ms": pct(gaps, 50) * 1000,
            "runner_gap_max_ms": gaps[-1] * 1000 if gaps else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64, help="output tokens per stream (synthetic: fixed length)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--like", default="qwen2.5-0.5b")
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--skip-llama-cpp", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    path = synthetic_model(args.like, args.quant)
    lokal = {n: Level(n) for n in LEVELS}
    ref = {n: Level(n) for n in LEVELS}
    extra: dict[str, Any] = {}

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_catalog(home, [tiny_entry("bench", path, ["general"])])
        env = {"LOKAL_PARALLEL": str(max(LEVELS)), "LOKAL_N_THREADS": str(args.threads)}
        with LokalServer(home, env=env) as srv:
            assert srv.proc is not None
            httpx.post(srv.url + "/lokal/models/bench/load", timeout=300).raise_for_status()
            lokal_level(srv.base_url, srv.proc.pid, 2, 4, "warm")
            for r in range(args.rounds):
                for n in LEVELS:
                    tps, dtps, ttft, cpu = lokal_level(srv.base_url, srv.proc.pid, n, args.tokens, f"r{r}n{n}")
                    lokal[n].agg_tps.append(tps)
                    lokal[n].decode_tps.append(dtps)
                    lokal[n].ttft += ttft
                    lokal[n].cpu_per_token_ms.append(cpu)
            extra["prefix_reuse"] = prefix_reuse(srv.base_url, 4)
            extra["fairness"] = fairness(srv.base_url, args.tokens)
            extra["ps"] = next(m for m in httpx.get(srv.url + "/lokal/ps").json()["models"] if m["alias"] == "bench")
        # The same join with prompt chunks as big as a batch (512): what chunking saves the running streams.
        with LokalServer(home, env={**env, "LOKAL_PREFILL_CHUNK": "512"}) as srv:
            httpx.post(srv.url + "/lokal/models/bench/load", timeout=300).raise_for_status()
            lokal_level(srv.base_url, srv.proc.pid, 2, 4, "warm")  # type: ignore[union-attr]
            extra["fairness_chunk512"] = fairness(srv.base_url, args.tokens)

    if not args.skip_llama_cpp:
        from llama_cpp import Llama

        llm = Llama(str(path), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
        llama_cpp_level(llm, 1, 4, "warm")
        for r in range(args.rounds):
            for n in LEVELS:
                tps, dtps, ttft, cpu = llama_cpp_level(llm, n, args.tokens, f"r{r}n{n}")
                ref[n].agg_tps.append(tps)
                ref[n].decode_tps.append(dtps)
                ref[n].ttft += ttft
                ref[n].cpu_per_token_ms.append(cpu)
        llm.close()

    def med(values: list[float]) -> float:
        return pct(values, 50) if values else float("nan")

    print(f"model: synthetic {args.like} {args.quant} ({path.stat().st_size / 2**20:.0f} MiB); {args.tokens} tokens "
          f"per stream; {args.rounds} rounds (medians); threads={args.threads}; {os.cpu_count()} CPUs; load avg "
          f"{os.getloadavg()[0]:.1f}")
    print("aggregate output tok/s = all streams' tokens / round wall time (prompt included); decode = the phase")
    print("where all streams generate; ratios to the same side's single stream; TTFT with all N sent at once")
    print(f"{'streams':>7} | {'lokal tok/s':>11} {'ratio':>6} {'decode':>7} {'ratio':>6} {'TTFT p50':>8} {'p95':>7} "
          f"{'cpu ms/tok':>10} | {'llama-cpp-python':>16} {'ratio':>6} {'TTFT p95':>8}")
    for n in LEVELS:
        lt, ld, rt = med(lokal[n].agg_tps), med(lokal[n].decode_tps), med(ref[n].agg_tps)
        rp95 = pct(ref[n].ttft, 95) * 1000 if ref[n].ttft else float("nan")
        print(f"{n:>7} | {lt:>11.1f} {lt / med(lokal[1].agg_tps):>5.2f}x {ld:>7.1f} "
              f"{ld / med(lokal[1].decode_tps):>5.2f}x {pct(lokal[n].ttft, 50) * 1000:>6.0f}ms "
              f"{pct(lokal[n].ttft, 95) * 1000:>5.0f}ms {med(lokal[n].cpu_per_token_ms):>10.1f} | "
              f"{rt:>16.1f} {rt / med(ref[1].agg_tps):>5.2f}x {rp95:>6.0f}ms")
    pr, fair, big = extra["prefix_reuse"], extra["fairness"], extra["fairness_chunk512"]
    print(f"prefix reuse: long shared system prompt TTFT cold {pr['cold_ttft_s'] * 1000:.0f} ms -> warm "
          f"{pr['warm_ttft_s'] * 1000:.0f} ms ({pr['speedup']:.1f}x)")
    print(f"fairness: a ~1500-token prompt joined 3 running streams; its TTFT {fair['long_prompt_ttft_s']:.2f} s; "
          f"runners' inter-token gap p50 {fair['runner_gap_p50_ms']:.0f} ms, max {fair['runner_gap_max_ms']:.0f} ms "
          f"(prompt chunks of 64; with chunks of 512: TTFT {big['long_prompt_ttft_s']:.2f} s, gap max "
          f"{big['runner_gap_max_ms']:.0f} ms)")
    ps = extra["ps"]
    print(f"server: slots {ps['slots']}, mean batch size (last 64 steps) {ps['batch_size']}, "
          f"decode steps {ps['decode_steps']}, prefix tokens reused {ps['prefix_reused_tokens']}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "lokal": [asdict(v) for v in lokal.values()],
                                         "llama_cpp_python": [asdict(v) for v in ref.values()], **extra}, indent=1))


if __name__ == "__main__":
    main()
