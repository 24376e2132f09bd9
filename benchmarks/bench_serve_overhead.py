"""lokal serve vs the same GGUF in-process with llama-cpp-python, measured side by side in one run.

Prints: streamed decode tokens/s ratio (goal >= 0.95x), TTFT overhead p50 (goal <= 15 ms), server RSS with no
model loaded, and the cold load time of the model. Default model: a synthetic qwen2.5-0.5b-shaped Q4_0 GGUF.

    python benchmarks/bench_serve_overhead.py [--rounds 6] [--tokens 64] [--quant q4_0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.models import tiny_entry, write_catalog  # noqa: E402
from tests.support.server import LokalServer  # noqa: E402

from benchmarks._common import pct, synthetic_model  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def in_process(path: Path, tokens: int, prompt: str) -> tuple[float, float]:
    """(ttft seconds, decode tokens/s) for one streamed completion, llama-cpp-python alone."""
    from llama_cpp import Llama

    llm = _llm_cache.setdefault(str(path), Llama(str(path), n_ctx=2048, verbose=False))
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    for chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
        if chunk["choices"][0]["text"]:
            now = time.perf_counter()
            if n == 0:
                first = now
            last = now
            n += 1
    return first - t0, (n - 1) / (last - first)


_llm_cache: dict[str, object] = {}
_client = httpx.Client()


def over_http(base: str, tokens: int, prompt: str) -> tuple[float, float]:
    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    # One pooled client, as real clients keep: a fresh httpx client per call builds an SSL context (~30 ms)
    # that would be charged to the server.
    with _client.stream("POST", base + "/completions", json=body, timeout=300) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            text = json.loads(line[5:])["choices"][0]["text"]
            if text:
                now = time.perf_counter()
                if n == 0:
                    first = now
                last = now
                n += 1
    return first - t0, (n - 1) / (last - first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--like", default="qwen2.5-0.5b")
    ap.add_argument("--quant", default="q4_0")
    args = ap.parse_args()
    path = synthetic_model(args.like, args.quant)

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_catalog(home, [tiny_entry("bench", path, ["general"])])
        with LokalServer(home, env={"LOKAL_PARALLEL": "1"}) as srv:
            rss_idle = httpx.get(srv.url + "/lokal/ps").json()["server_rss_bytes"]
            t0 = time.perf_counter()
            httpx.post(srv.url + "/lokal/models/bench/load", timeout=300).raise_for_status()
            cold_load = time.perf_counter() - t0
            over_http(srv.base_url, 8, PROMPT)  # warm both paths
            in_process(path, 8, PROMPT)
            http_ttft, http_tps, local_ttft, local_tps = [], [], [], []
            # Interleaved, so drift on a noisy machine hits both sides; a fresh prompt prefix each round, so
            # neither side skips prompt processing through llama.cpp's prefix reuse.
            for i in range(args.rounds):
                a, b = over_http(srv.base_url, args.tokens, f"[round {i}a] {PROMPT}")
                http_ttft.append(a)
                http_tps.append(b)
                c, d = in_process(path, args.tokens, f"[round {i}b] {PROMPT}")
                local_ttft.append(c)
                local_tps.append(d)

    ratio = pct(http_tps, 50) / pct(local_tps, 50)
    overhead_ms = (pct(http_ttft, 50) - pct(local_ttft, 50)) * 1000
    print(
        f"model: synthetic {args.like} {args.quant} ({path.stat().st_size / 2**20:.0f} MiB), "
        f"{args.tokens} tokens x {args.rounds} rounds, interleaved"
    )
    print(
        f"decode tok/s p50: lokal serve {pct(http_tps, 50):.1f} | in-process {pct(local_tps, 50):.1f} "
        f"| ratio {ratio:.3f}x (goal >= 0.95x)"
    )
    print(
        f"TTFT p50: lokal serve {pct(http_ttft, 50) * 1000:.1f} ms | in-process {pct(local_ttft, 50) * 1000:.1f} ms "
        f"| overhead {overhead_ms:.1f} ms (goal <= 15 ms)"
    )
    print(f"server RSS with no model loaded: {rss_idle / 2**20:.0f} MiB")
    print(f"cold load of the model through the server: {cold_load:.2f} s")


if __name__ == "__main__":
    main()
