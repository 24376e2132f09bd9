"""lokal serve vs llama.cpp's own llama-server (what Ollama runs on) on the same GGUF, side by side in one run.

Both servers get the same file, the same threads and the same number of parallel slots, each slot the same
context; rounds alternate between them so machine noise hits both alike. Every row is printed as a ratio where
>= 1.00x means lokal is at or above llama-server (tok/s: lokal / llama-server; latency: llama-server / lokal):

- decode: streamed tok/s of one request (tokens after the first over the time after the first);
- TTFT p50 / p95 of a short prompt;
- aggregate tok/s at 1, 2, 4 and 8 concurrent streams (all tokens over the wall time of the burst);
- prompt-heavy: TTFT of a ~1k-token prompt never seen before (prefill speed);
- prefix reuse: TTFT of a ~1k-token prompt whose first ~1k tokens the server has just read for another request.

llama-server is built once from the llama-cpp-python sdist of the installed version (its vendored llama.cpp,
-DGGML_NATIVE=OFF like lokal's build, static), cached under ~/.cache/lokal-bench (a few minutes on 2 cores).
Outputs run to a fixed length (ignore_eos: random weights would stop at random places).

    python benchmarks/bench_vs_llama_server.py [--quant q4_k_m] [--rounds 3] [--tokens 64] [--quick]
                                               [--rows decode,ttft,aggregate,heavy,prefix]
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.models import tiny_entry, write_catalog  # noqa: E402
from tests.support.server import LokalServer  # noqa: E402

from benchmarks._common import pct, serving, synthetic_model  # noqa: E402

BUILD_CACHE = Path(os.environ.get("LOKAL_LLAMA_SERVER_CACHE", Path.home() / ".cache" / "lokal-bench"))
CTX_PER_SLOT = 2048
WORDS = ("the", "lighthouse", "keeper", "found", "a", "message", "in", "a", "bottle", "on", "the", "shore")


# -- llama-server, built from the installed llama-cpp-python's own sources --------------------------------------
def llama_server_binary(cuda: bool = False) -> Path:
    """`cuda`: a CUDA build (nvcc on PATH; LOKAL_CUDA_ARCH, default "native", names the GPU architectures)."""
    version = importlib.metadata.version("llama-cpp-python")
    flavour = f"{version}-cuda" if cuda else version
    binary = BUILD_CACHE / f"llama-server-{flavour}" / "llama-server"
    if binary.is_file():
        return binary
    src = BUILD_CACHE / "src"
    tree = src / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not tree.is_dir():
        print(f"fetching the llama-cpp-python {version} sdist (its vendored llama.cpp) ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
                + [f"llama-cpp-python=={version}", "-d", tmp],
                check=True,
            )
            (sdist,) = Path(tmp).glob("*.tar.gz")
            src.mkdir(parents=True, exist_ok=True)
            with tarfile.open(sdist) as tar:
                tar.extractall(src, filter="data")
    build = BUILD_CACHE / f"build-{flavour}"
    print(f"building llama-server {flavour} into {binary} (once; minutes) ...", flush=True)
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=OFF",  # the flags lokal's llama-cpp-python build uses (README): same kernels on both sides
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # it would download the web UI
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
    ]
    if cuda:
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('LOKAL_CUDA_ARCH', 'native')}"]
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(tree), "-B", str(build), *generator, *flags], check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "bin" / "llama-server", binary)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def llama_server(binary: Path, model: Path, threads: int, parallel: int, gpu_layers: int = 0) -> Iterator[str]:
    port = _free_port()
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["-t", str(threads), "-tb", str(threads), "-np", str(parallel), "-c", str(CTX_PER_SLOT * parallel)]
    if gpu_layers:
        cmd += ["-ngl", str(gpu_layers if gpu_layers > 0 else 999)]
    cmd += ["--no-webui", "-a", "bench"]
    with serving(cmd, f"http://127.0.0.1:{port}/health", "llama-server"):
        yield f"http://127.0.0.1:{port}/v1"


# -- one streamed completion -------------------------------------------------------------------------------------
_client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))


def stream(base: str, prompt: str, tokens: int, model: str = "bench") -> tuple[float, float, int, float]:
    """(ttft s, decode tok/s, tokens, end time) of one streamed /completions request."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    for attempt in range(2):
        try:
            return _stream_once(base, body)
        except httpx.RemoteProtocolError:
            # llama-server's HTTP library closes a kept-alive connection after 5 requests; a request sent on it
            # just then gets no answer. Clients (openai's) send it again; so does this, once.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _stream_once(base: str, body: dict[str, object]) -> tuple[float, float, int, float]:
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    with _client.stream("POST", base + "/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            choices = json.loads(line[5:]).get("choices") or []
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    tps = (n - 1) / (last - first) if n > 1 and last > first else float("nan")
    return first - t0, tps, n, last


def burst(base: str, streams: int, tokens: int, tag: str, model: str = "bench") -> float:
    """Aggregate tok/s of `streams` requests started together."""
    results: list[tuple[float, float, int, float]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        got = stream(base, f"[{tag} {i}] " + short_prompt(), tokens, model)
        with lock:
            results.append(got)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = max(r[3] for r in results)
    return sum(r[2] for r in results) / (end - t0)


def _burst_row(streams: int, tokens: int, base: str, tag: str, r: int) -> float:
    return burst(base, streams, tokens, f"{tag}-x{streams}")


def short_prompt() -> str:
    return "Write a short story about a lighthouse keeper who finds a message in a bottle."


def long_prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def prompt_tokens(base: str, prompt: str) -> int:
    """Prompt length as llama-server's tokenizer counts it (the same GGUF vocabulary as lokal's)."""
    r = _client.post(base.removesuffix("/v1") + "/tokenize", json={"content": prompt})
    r.raise_for_status()
    return len(r.json()["tokens"])


# -- the run -----------------------------------------------------------------------------------------------------
def alternate(rounds: int, sides: dict[str, str], measure: Callable[[str, str, int], float]) -> dict[str, list[float]]:
    """`measure(base, tag, round)` on each side per round, the side that goes first alternating."""
    out: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(measure(sides[name], f"{name}-{r}", r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", default="qwen2.5-0.5b")
    ap.add_argument("--quant", default="q4_k_m", help="the catalog's default quantization, written by llama.cpp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 round, fewer rows (a smoke run)")
    ap.add_argument(
        "--rows", default="all", help="comma-separated subset of decode,ttft,aggregate,heavy,prefix (default: all)"
    )
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    groups = {"decode", "ttft", "aggregate", "heavy", "prefix"}
    wanted = groups if args.rows == "all" else set(args.rows.split(","))
    if not wanted <= groups:
        ap.error(f"--rows: unknown {', '.join(sorted(wanted - groups))}; choose from {', '.join(sorted(groups))}")
    path = synthetic_model(args.like, args.quant)
    binary = llama_server_binary()
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_catalog(home, [tiny_entry("bench", path, ["general"], context_length=CTX_PER_SLOT)])
        env = {"LOKAL_PARALLEL": str(args.parallel), "LOKAL_N_THREADS": str(args.threads)}
        with (
            LokalServer(home, env=env) as lokal_srv,
            llama_server(binary, path, args.threads, args.parallel) as llama_base,
        ):
            httpx.post(lokal_srv.url + "/lokal/models/bench/load", timeout=300).raise_for_status()
            sides = {"lokal": lokal_srv.base_url, "llama-server": llama_base}
            for base in sides.values():  # warm: first touch of the weights, graph allocation
                stream(base, "warm up " + short_prompt(), 8)
            # ~1k tokens: calibrated on the tokenizer, so both sides read the same prompt length
            per_word = prompt_tokens(llama_base, long_prompt(random.Random(1), 200)) / 200
            long_words = int(1000 / per_word)

            # Every prompt is new to both servers (its own tag), so no row is helped by a slot that happens to
            # hold the same prompt from an earlier row; prefix reuse has its own row.
            none: dict[str, list[float]] = {name: [] for name in sides}
            singles = (
                alternate(
                    rounds * 2,
                    sides,
                    lambda b, tag, r: stream(b, f"[decode {tag}] " + short_prompt(), args.tokens)[1],
                )
                if "decode" in wanted
                else none
            )
            ttfts = (
                alternate(rounds * 4, sides, lambda b, tag, r: stream(b, f"[ttft {tag}] " + short_prompt(), 2)[0])
                if "ttft" in wanted
                else none
            )
            levels = ([1, 4] if args.quick else [1, 2, 4, 8]) if "aggregate" in wanted else []
            aggregate = {n: alternate(rounds, sides, functools.partial(_burst_row, n, args.tokens)) for n in levels}
            heavy = (
                alternate(rounds * 2, sides, lambda b, tag, r: stream(b, long_prompt(rng, long_words), 2)[0])
                if "heavy" in wanted
                else none
            )

            def reuse(base: str, tag: str, r: int) -> float:
                shared = long_prompt(rng, long_words)
                stream(base, shared + " first question?", 2)
                return stream(base, shared + " second question?", 2)[0]

            prefix = alternate(rounds * 2, sides, reuse) if "prefix" in wanted else none
            n_long = prompt_tokens(llama_base, long_prompt(random.Random(2), long_words))

    def med(values: list[float]) -> float:
        return statistics.median(values)

    rows: list[tuple[str, float, float, str, bool]] = []
    if "decode" in wanted:
        rows.append(("decode tok/s, 1 stream", med(singles["lokal"]), med(singles["llama-server"]), "tok/s", True))
    if "ttft" in wanted:
        rows.append(("TTFT p50, short prompt", pct(ttfts["lokal"], 50), pct(ttfts["llama-server"], 50), "ms", False))
        rows.append(("TTFT p95, short prompt", pct(ttfts["lokal"], 95), pct(ttfts["llama-server"], 95), "ms", False))
    for n, v in aggregate.items():
        rows.append((f"aggregate tok/s, {n} streams", med(v["lokal"]), med(v["llama-server"]), "tok/s", True))
    if "heavy" in wanted:
        rows.append((f"TTFT, {n_long}-token prompt", med(heavy["lokal"]), med(heavy["llama-server"]), "ms", False))
    if "prefix" in wanted:
        name = f"TTFT, {n_long}-token prompt, prefix reused"
        rows.append((name, med(prefix["lokal"]), med(prefix["llama-server"]), "ms", False))
    size = path.stat().st_size / 2**20
    print(
        f"\n{args.like} {args.quant} (SYNTHETIC random weights, {size:.0f} MiB), {args.threads} threads, "
        f"{args.parallel} slots x {CTX_PER_SLOT} context, {rounds} rounds alternating"
    )
    print(f"{'row':<44} {'lokal':>10} {'llama-server':>13} {'lokal vs':>9}")
    for name, ours, theirs, unit, higher_better in rows:
        scale = 1000.0 if unit == "ms" else 1.0
        ratio = ours / theirs if higher_better else theirs / ours
        print(f"{name:<44} {ours * scale:>8.1f}{unit[:2]:>2} {theirs * scale:>11.1f}{unit[:2]:>2} {ratio:>8.2f}x")
    print(">= 1.00x: lokal at or above llama-server (tok/s: lokal / llama-server; latency: llama-server / lokal)")


if __name__ == "__main__":
    main()
