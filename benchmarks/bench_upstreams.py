"""lokal in front of upstreams: concurrency, replica pools, proxy overhead and failover, measured in one run.

A real `lokal serve` (subprocess) serves remote catalog entries in front of scripted OpenAI-compatible upstreams
(each its own process, known TTFT and inter-token delay), and a raw httpx client measures:

  (a) 8 concurrent streams' aggregate tok/s / one stream's, through lokal to one upstream     goal >= 7x
  (b) 64 concurrent streams over a pool of 4 replicas, aggregate tok/s / ideal (64 x one), at 25 and 50 tok/s
      a stream, beside the same streams sent straight to the replicas (this machine's ceiling)  goal >= 0.9x
  (c) proxy overhead against the same upstream direct: decode tok/s ratio (goal >= 0.98x) and the TTFT lokal
      adds, p50/p95 over paired requests (goal p50 <= 5 ms)
  (d) failover: 3 replicas, one SIGKILLed mid-run: requests that failed before their first token (goal 0),
      requests cut mid-stream and whether each ended with an error frame (goal: all), hung requests (goal 0)

    python benchmarks/bench_upstreams.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import spawn_logged  # noqa: E402

from benchmarks._common import pct, spawn_scripted  # noqa: E402

PROMPT = [{"role": "user", "content": "Say something."}]
HANG_S = 15.0  # a request still open after this long counts as hung


@dataclass(frozen=True)
class Shape:
    ttft_s: float
    itl_s: float
    tokens: int

    def args(self) -> list[str]:
        return ["--ttft", str(self.ttft_s), "--itl", str(self.itl_s), "--tokens", str(self.tokens)]


@dataclass
class Stream:
    outcome: str = "hung"  # ok | cut_with_error | cut_silently | failed_before | http_<status> | hung
    ttft_s: float | None = None
    times: list[float] = field(default_factory=list)  # perf_counter at each content chunk

    @property
    def tokens(self) -> int:
        return len(self.times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


class Procs:
    def __init__(self) -> None:
        self.all: list[subprocess.Popen[bytes]] = []

    def upstreams(self, *shapes: Shape) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """One scripted upstream process per shape, started together."""
        out = []
        for shape in shapes:
            port = free_port()
            proc = spawn_scripted(port, *shape.args(), quiet=True)
            self.all.append(proc)
            out.append((f"http://127.0.0.1:{port}/v1", proc))
        for base, proc in out:
            wait_up(base + "/models", proc, "scripted upstream")
        return out

    def lokal(self, home: Path) -> str:
        port = free_port()
        env = {**os.environ, "LOKAL_HOME": str(home), "LOKAL_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "lokal", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-pull"]
        proc = spawn_logged([*cmd, "--log-level", "warning"], home / "server.log", env)
        self.all.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/health", proc, "lokal serve")
        return url + "/v1"

    def close(self) -> None:
        for p in self.all:
            if p.poll() is None:
                p.terminate()
        for p in self.all:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


async def one_stream(client: httpx.AsyncClient, url: str, model: str) -> Stream:
    out = Stream()
    body = {"model": model, "messages": PROMPT, "stream": True, "max_tokens": 1000}
    t0 = time.perf_counter()

    async def read() -> None:
        async with client.stream("POST", url + "/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                out.outcome = f"http_{r.status_code}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    out.outcome = "ok"
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    out.outcome = "cut_with_error" if out.times else "failed_before"
                    return
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if out.ttft_s is None:
                            out.ttft_s = now - t0
                        out.times.append(now)
            out.outcome = "cut_silently" if out.times else "failed_before"  # EOF without [DONE]

    try:
        await asyncio.wait_for(read(), HANG_S)
    except TimeoutError:
        out.outcome = "hung"
    except httpx.HTTPError:
        out.outcome = "cut_silently" if out.times else "failed_before"
    return out


async def burst(client: httpx.AsyncClient, url: str, model: str, n: int) -> tuple[float, list[Stream]]:
    """n streams at once; aggregate content tok/s over the burst's wall time."""
    t0 = time.perf_counter()
    streams = await asyncio.gather(*(one_stream(client, url, model) for _ in range(n)))
    wall = time.perf_counter() - t0
    bad = Counter(s.outcome for s in streams if s.outcome != "ok")
    if bad:
        print(f"  ! {model} x{n}: {dict(bad)}")
    return sum(s.tokens for s in streams) / wall, streams


def decode_rate(s: Stream) -> float:
    return (s.tokens - 1) / (s.times[-1] - s.times[0]) if s.tokens > 1 else float("nan")


def catalog(home: Path, entries: dict[str, dict[str, Any]]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    models = [
        {"alias": alias, "variants": [{"id": f"{alias}-remote:1", "engine": "remote", "upstream_model": "m", **v}]}
        for alias, v in entries.items()
    ]
    (home / "catalog.yaml").write_text(yaml.safe_dump({"models": models}, sort_keys=False))


async def spread_burst(client: httpx.AsyncClient, urls: list[str], n: int) -> tuple[float, list[Stream]]:
    """n streams at once straight to the replicas, spread evenly by the client: no lokal in between."""
    t0 = time.perf_counter()
    streams = await asyncio.gather(*(one_stream(client, urls[i % len(urls)], "m") for i in range(n)))
    return sum(s.tokens for s in streams) / (time.perf_counter() - t0), streams


def ttft_ms(runs: list[tuple[float, list[Stream]]], q: float) -> float:
    return pct([s.ttft_s * 1000 for _, streams in runs for s in streams if s.ttft_s is not None], q)


async def run(args: argparse.Namespace, lokal: str, direct: str, pools: list[tuple[str, list[str]]]) -> None:
    repeats = 1 if args.quick else 3
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=httpx.Timeout(HANG_S), limits=limits) as client:
        for model in (
            "one",
            "direct",
            *(alias for alias, _ in pools),
        ):  # load the models, open the keep-alive connections
            await burst(client, lokal, model, 8)
        await burst(client, direct, "m", 8)

        # (a) 8 streams vs 1, through lokal to one upstream
        one = [(await burst(client, lokal, "one", 1))[0] for _ in range(repeats)]
        eight = [(await burst(client, lokal, "one", 8))[0] for _ in range(repeats)]
        one_tps, eight_tps = statistics.median(one), statistics.median(eight)
        print(
            f"(a) 1 stream {one_tps:7.1f} tok/s   8 streams {eight_tps:7.1f} tok/s   ratio {eight_tps / one_tps:5.2f}x"
        )

        # (b) 64 streams over 4 replicas vs 64 x one stream, at two per-stream speeds (lokal's CPU cost is per
        # chunk); the same 64 sent straight to the replicas (the client spreading them) shows what this machine's
        # CPUs allow without lokal in between
        for alias, urls in pools:
            single = statistics.median([(await burst(client, lokal, alias, 1))[0] for _ in range(repeats)])
            via = [await burst(client, lokal, alias, 64) for _ in range(repeats)]
            straight = [await spread_burst(client, urls, 64) for _ in range(repeats)]
            agg, ceiling = statistics.median(t for t, _ in via), statistics.median(t for t, _ in straight)
            ideal = 64 * single
            print(
                f"(b) 64 streams / 4 replicas, {single:4.1f} tok/s a stream: {agg:7.1f} tok/s   ideal {ideal:7.1f}"
                f"   ratio {agg / ideal:5.2f}x   (straight to the replicas, no lokal: {ceiling / ideal:4.2f}x)"
            )
            print(
                f"    TTFT in the burst p50/p95: via lokal {ttft_ms(via, 50):4.0f}/{ttft_ms(via, 95):4.0f} ms, "
                f"straight {ttft_ms(straight, 50):4.0f}/{ttft_ms(straight, 95):4.0f} ms"
            )

        # (c) proxy overhead: the same upstream, direct and through lokal, alternating, one request at a time
        n = 10 if args.quick else 30
        pairs: list[tuple[Stream, Stream]] = []
        for _ in range(n):
            d = await one_stream(client, direct, "m")
            v = await one_stream(client, lokal, "direct")  # the same upstream process, through lokal
            if d.outcome == v.outcome == "ok":
                pairs.append((d, v))
        d_rate = statistics.median(decode_rate(d) for d, _ in pairs)
        v_rate = statistics.median(decode_rate(v) for _, v in pairs)
        extra_ms = sorted(((v.ttft_s or 0) - (d.ttft_s or 0)) * 1000 for d, v in pairs)
        print(
            f"(c) decode tok/s direct {d_rate:6.1f}  via lokal {v_rate:6.1f}  ratio {v_rate / d_rate:5.3f}x   "
            f"TTFT added p50 {pct(extra_ms, 50):5.2f} ms  p95 {pct(extra_ms, 95):5.2f} ms  ({len(pairs)} pairs)"
        )


async def failover(args: argparse.Namespace, lokal: str, victim: subprocess.Popen[bytes]) -> None:
    """A steady stream of requests over 3 replicas; one replica is SIGKILLed while requests stream from it."""
    concurrency, total = (12, 36) if args.quick else (12, 72)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(HANG_S), limits=limits) as client:
        await burst(client, lokal, "three", 6)  # load it, warm every replica
        queue = list(range(total))
        results: list[Stream] = []
        stagger = 0.9 / concurrency  # starts spread over one stream's length: some always mid-stream

        async def worker(i: int) -> None:
            await asyncio.sleep(i * stagger)
            while queue:
                queue.pop()
                results.append(await one_stream(client, lokal, "three"))

        async def killer() -> None:
            await asyncio.sleep(2.0)
            victim.send_signal(signal.SIGKILL)

        await asyncio.gather(killer(), *(worker(i) for i in range(concurrency)))
    c = Counter(s.outcome for s in results)
    cut = c["cut_with_error"] + c["cut_silently"]
    print(
        f"(d) {total} requests, 1 of 3 replicas killed mid-run: ok {c['ok']}, failed before first token "
        f"{c['failed_before'] + sum(v for k, v in c.items() if k.startswith('http_'))}, cut mid-stream {cut} "
        f"({c['cut_with_error']} with an error frame, {c['cut_silently']} without), hung {c['hung']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and requests (about 30 s)")
    args = ap.parse_args()
    shape = Shape(ttft_s=0.05, itl_s=0.02, tokens=40)  # ~0.83 s a stream, 50 tok/s each
    slow = Shape(ttft_s=0.05, itl_s=0.04, tokens=40)  # 25 tok/s a stream: a large model on a busy GPU
    overhead = Shape(ttft_s=0.02, itl_s=0.005, tokens=40)
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="lokal-bench-upstreams-") as tmp:
            ups = procs.upstreams(shape, *[shape] * 4, *[slow] * 4, overhead, *[shape] * 3)
            one, four, four_slow = ups[0][0], [u for u, _ in ups[1:5]], [u for u, _ in ups[5:9]]
            direct, three = ups[9][0], ups[10:]
            home = Path(tmp)
            catalog(
                home,
                {
                    "one": {"base_url": one, "max_concurrency": 64},
                    "four": {"base_url": four[0], "replicas": four[1:], "max_concurrency": 16},
                    "four-slow": {"base_url": four_slow[0], "replicas": four_slow[1:], "max_concurrency": 16},
                    "direct": {"base_url": direct},
                    "three": {
                        "base_url": three[0][0],
                        "replicas": [u for u, _ in three[1:]],
                        "health_check_s": 1.0,
                        "eject_after": 1,
                        "eject_cooldown_s": 30,
                    },
                },
            )
            lokal = procs.lokal(home)
            print(
                f"lokal serve in front of scripted upstreams (own processes): TTFT {shape.ttft_s * 1000:.0f} ms, "
                f"{shape.itl_s * 1000:.0f} ms/token, {shape.tokens} tokens; overhead pair "
                f"{overhead.ttft_s * 1000:.0f} ms / {overhead.itl_s * 1000:.0f} ms; {os.cpu_count()} CPUs"
            )
            t0 = time.perf_counter()
            asyncio.run(run(args, lokal, direct, [("four-slow", four_slow), ("four", four)]))
            asyncio.run(failover(args, lokal, three[1][1]))
            print(f"total {time.perf_counter() - t0:.1f} s")
    finally:
        procs.close()


if __name__ == "__main__":
    main()
