"""ONNX Runtime GenAI (the base install's engine) vs llama.cpp (the `[llamacpp]` extra) on the same shape.

Both models are random weights of the same real shape (default qwen2.5-0.5b), written by lokal's own writers:
a GGUF (q4_0 by default; llama.cpp's 4-bit with 32-weight blocks) and an ONNX GenAI folder (int4 MatMulNBits,
32-weight blocks). One `lokal serve` serves both, with the same threads (LOKAL_N_THREADS); rounds alternate which
goes first so machine noise hits both alike. Printed: streamed decode tok/s and TTFT of a short prompt for each,
and the ratio ONNX / llama.cpp (tok/s: onnx / llama.cpp; TTFT: llama.cpp / onnx, so > 1.00x means ONNX is
faster either way). Outputs run to a fixed length (ignore_eos); every prompt is new to both.

    python benchmarks/bench_onnx_vs_llamacpp.py [--like qwen2.5-0.5b] [--gguf-quant q4_0] [--onnx-quant int4]
                                                [--rounds 3] [--tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import LokalServer  # noqa: E402

from benchmarks._common import CACHE, pct  # noqa: E402
from lokal.catalog.catalog import Catalog  # noqa: E402
from lokal.catalog.synth import synthesize, synthesize_onnx  # noqa: E402
from lokal.config import Settings  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def ensure_models(home: Path, like: str, gguf_quant: str, onnx_quant: str) -> tuple[str, str]:
    settings = Settings(home=home)
    catalog = Catalog.load(settings)
    gguf, onnx = f"bench-{like}-{gguf_quant}", f"bench-{like}-onnx-{onnx_quant}"
    if catalog.get(gguf) is None:
        print(f"writing {gguf} (once) ...", flush=True)
        synthesize(settings, like, gguf_quant, gguf)
    if catalog.get(onnx) is None:
        print(f"writing {onnx} (once) ...", flush=True)
        synthesize_onnx(settings, like, onnx_quant, onnx)
    return gguf, onnx


def stream(base: str, model: str, tokens: int, tag: str) -> tuple[float, float]:
    """(TTFT s, decode tok/s) of one streamed chat completion. `tag` starts the prompt, so that no request
    finds its prompt already read (llama.cpp's slots keep the last prompt's KV; ONNX GenAI keeps none)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"[{tag}] {PROMPT}"}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    with httpx.stream("POST", base + "/chat/completions", json=body, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line.endswith("[DONE]"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    return first - t0, (n - 1) / (last - first) if n > 1 and last > first else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", default="qwen2.5-0.5b")
    ap.add_argument("--gguf-quant", default="q4_0")
    ap.add_argument("--onnx-quant", default="int4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="for both (LOKAL_N_THREADS; 0: unset)")
    args = ap.parse_args()

    home = CACHE / "home-onnx-vs-llamacpp"
    gguf, onnx = ensure_models(home, args.like, args.gguf_quant, args.onnx_quant)
    env = {"LOKAL_MAX_LOADED_MODELS": "2"}
    if args.threads:  # 0: leave it to each engine's default
        env["LOKAL_N_THREADS"] = str(args.threads)
    server = LokalServer(home, env=env).start(timeout=300)
    try:
        for model in (gguf, onnx):  # load and warm both before anything is timed
            stream(server.base_url, model, 8, "warm")
        ttft: dict[str, list[float]] = {gguf: [], onnx: []}
        tps: dict[str, list[float]] = {gguf: [], onnx: []}
        for r in range(args.rounds):
            for model in (gguf, onnx) if r % 2 == 0 else (onnx, gguf):
                t, s = stream(server.base_url, model, args.tokens, f"round {r}")
                ttft[model].append(t)
                tps[model].append(s)
                print(f"round {r + 1} {model:40s} TTFT {t * 1000:7.1f} ms  decode {s:6.1f} tok/s", flush=True)
    finally:
        server.stop()

    g_tps, o_tps = statistics.median(tps[gguf]), statistics.median(tps[onnx])
    g_ttft, o_ttft = pct(ttft[gguf], 50), pct(ttft[onnx], 50)
    print(f"\nshape {args.like}, {args.tokens} tokens, {args.rounds} rounds, {args.threads} threads (medians)")
    print(f"{'':24s}{'llama.cpp ' + args.gguf_quant:>20s}{'onnx genai ' + args.onnx_quant:>20s}{'onnx/llama.cpp':>16s}")
    print(f"{'decode tok/s':24s}{g_tps:20.1f}{o_tps:20.1f}{o_tps / g_tps:15.2f}x")
    print(f"{'TTFT p50 ms':24s}{g_ttft * 1000:20.1f}{o_ttft * 1000:20.1f}{g_ttft / o_ttft:15.2f}x")


if __name__ == "__main__":
    main()
