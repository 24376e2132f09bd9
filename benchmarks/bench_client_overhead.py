"""Is the bench client ever the bottleneck? Sustained requests/s it drives vs a minimal raw-httpx loop.

Both clients hit the same scripted OpenAI-compatible server (separate process, zero delay, 16 tokens per
answer), at the same concurrency, in alternating order, several times; the median of each is printed side by
side as a ratio, together with client CPU time per request (the cost the bench adds over bare httpx).

    python benchmarks/bench_client_overhead.py [--requests 400] [--concurrency 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import spawn_scripted  # noqa: E402
from lokal.bench.config import BenchConfig, LoadPattern, ModelEntry  # noqa: E402
from lokal.bench.prompts import Prompt  # noqa: E402
from lokal.bench.runner import arun_bench  # noqa: E402


@dataclass
class Sample:
    rps: float
    cpu_us_per_request: float


PROMPT = [{"role": "user", "content": "Say something short."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_loop(url: str, n: int, concurrency: int, stream: bool, tokens: int) -> Sample:
    """The floor: POST, read the SSE lines (or the body), nothing else."""
    body = {"model": "m", "messages": PROMPT, "max_tokens": tokens, "stream": stream}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                if stream:
                    async with client.stream("POST", url, json=body) as r:
                        async for _ in r.aiter_lines():
                            pass
                else:
                    (await client.post(url, json=body)).read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the connections
        remaining = n
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Sample(n / wall, cpu / n * 1e6)


async def bench_client(base_url: str, n: int, concurrency: int, stream: bool, tokens: int) -> Sample:
    """The real thing: lokal's runner with per-request records, SSE parsing, usage and statistics."""
    prompts = [Prompt(f"p{i}", tuple(PROMPT)) for i in range(concurrency)]
    cfg = BenchConfig(
        models=[ModelEntry(name="m")],
        endpoint=base_url,
        prompts=prompts,
        rounds=max(1, n // concurrency),
        warmup_rounds=1,
        max_tokens=tokens,
        stream=stream,
        server_stats=False,
        pattern=LoadPattern("concurrency", concurrency=concurrency),
    )
    cpu0 = time.process_time()
    result = await arun_bench(cfg)
    cpu = time.process_time() - cpu0
    step = result.models[0].steps[0]
    total = len(step.records) + len(result.models[0].warmup)
    assert step.summary.errors == 0, step.summary.error_kinds
    # CPU covers warm-up too, so it is divided by every request sent.
    return Sample(step.summary.success / step.summary.duration_s, cpu / total * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    port = free_port()
    server = spawn_scripted(port, "--tokens", str(args.tokens))
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/models", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("scripted server did not start") from None
                time.sleep(0.1)

        print(
            f"{args.requests} requests x {args.repeats} repeats, concurrency {args.concurrency}, "
            f"{args.tokens} tokens/answer, zero server delay; server: scripted uvicorn in its own process"
        )
        # "bench ceiling": requests/s one core could drive if the bench client were its only work.
        print(
            f"{'mode':<10} {'raw req/s':>10} {'bench req/s':>12} {'ratio':>6} "
            f"{'raw CPU us/req':>15} {'bench CPU us/req':>17} {'bench ceiling req/s':>20}"
        )
        for stream in (True, False):
            raw: list[Sample] = []
            ours: list[Sample] = []
            for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both alike
                raw.append(
                    asyncio.run(
                        raw_loop(f"{base}/chat/completions", args.requests, args.concurrency, stream, args.tokens)
                    )
                )
                ours.append(asyncio.run(bench_client(base, args.requests, args.concurrency, stream, args.tokens)))
            r_rps = statistics.median(s.rps for s in raw)
            b_rps = statistics.median(s.rps for s in ours)
            r_cpu = statistics.median(s.cpu_us_per_request for s in raw)
            b_cpu = statistics.median(s.cpu_us_per_request for s in ours)
            mode = "stream" if stream else "no-stream"
            print(
                f"{mode:<10} {r_rps:>10.0f} {b_rps:>12.0f} {b_rps / r_rps:>6.2f} {r_cpu:>15.0f} {b_cpu:>17.0f} "
                f"{1e6 / b_cpu:>20.0f}"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
