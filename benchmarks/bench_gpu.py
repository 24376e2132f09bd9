"""On one NVIDIA GPU: lokal's llama.cpp engine vs llama.cpp's own llama-server vs vLLM, and lokal in front of
vLLM as a `remote` upstream vs the same vLLM direct, side by side in one run.

Every side serves the same synthetic random-weight shape (GGUF for the llama.cpp sides, the same shape as a
Hugging Face checkpoint for vLLM), every layer on the GPU, rounds alternating; outputs run to a fixed length
(ignore_eos). Rows: streamed decode tok/s of one request, TTFT p50 of a short prompt, aggregate tok/s at each
concurrency level. Ratios >= 1.00x mean the first side named is at or above the second.

Needs: nvidia-smi, a CUDA build of llama-cpp-python (README: install paths), nvcc and cmake for llama-server
(built once with -DGGML_CUDA=ON from the installed llama-cpp-python's sdist, cached under ~/.cache/lokal-bench),
and for the vLLM rows either `vllm` importable here (`--start-vllm`: serves a random-weight checkpoint this
script writes, needs torch + transformers) or a running vLLM serving that shape (`--vllm-url`, `--vllm-model`).

    python benchmarks/bench_gpu.py [--start-vllm | --vllm-url URL --vllm-model NAME] [--levels 1,4,16,64]
                                   [--like qwen2.5-0.5b] [--quant q8_0] [--tokens 128] [--rounds 3]

`--cpu` runs the same script with no GPU (CPU builds, lokal in front of llama-server as the upstream instead of
vLLM): a smoke run of the script itself, not a GPU figure.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.models import tiny_entry, write_catalog  # noqa: E402
from tests.support.server import LokalServer  # noqa: E402

from benchmarks._common import pct, serving, synthetic_model  # noqa: E402
from benchmarks.bench_vs_llama_server import (  # noqa: E402
    CTX_PER_SLOT,
    alternate,
    burst,
    llama_server,
    llama_server_binary,
    short_prompt,
    stream,
)
from lokal import hardware  # noqa: E402
from lokal.gguf.synthetic import SHAPES  # noqa: E402
from lokal.runtime import engines  # noqa: E402

Side = tuple[str, str]  # (base URL ending in /v1, model name there)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_gpu() -> str:
    """The GPU's name; exits naming what is missing when this machine cannot run the GPU rows."""
    gpus = hardware.nvidia_gpus()
    if not gpus:
        sys.exit("no NVIDIA GPU here (nvidia-smi found none); `--cpu` runs the script itself without one")
    if not engines.llama_cpp_offloads():
        sys.exit(f"llama-cpp-python here is a CPU-only build; build the CUDA one: {engines.LLAMACPP_CUDA_INSTALL}")
    if shutil.which("nvcc") is None:
        sys.exit("nvcc is not on PATH: llama-server's CUDA build needs the CUDA toolkit")
    return f"{gpus[0].name} ({gpus[0].memory_bytes / 2**30:.0f} GiB)"


@contextmanager
def vllm_server(like: str, parallel: int, work: Path) -> Iterator[Side]:
    """`vllm serve` on a random-weight checkpoint of the shape the GGUF sides serve."""
    from lokal.web.synth import write_hf_model

    folder = work / f"{like}-hf"
    print(f"writing a random-weight {like} checkpoint for vLLM to {folder} ...", flush=True)
    write_hf_model(folder, SHAPES[like])
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    cmd += ["--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-num-seqs", str(parallel), "--max-model-len", str(CTX_PER_SLOT), "--dtype", "bfloat16"]
    with serving(cmd, f"http://127.0.0.1:{port}/health", "vLLM", timeout=600):  # the first start compiles graphs
        yield f"http://127.0.0.1:{port}/v1", "bench"


def measure(sides: dict[str, Side], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per side: decode tok/s, TTFT p50 (s) and aggregate tok/s at each level, rounds alternating."""
    # Two sides can share a base URL (lokal's engine and lokal in front of the upstream): each is its name.
    names = {name: name for name in sides}
    for base, model in sides.values():  # warm: weights touched, graphs captured
        stream(base, "warm up " + short_prompt(), 8, model)

    def decode(name: str, tag: str, r: int) -> float:
        base, model = sides[name]
        return stream(base, f"[decode {tag}] " + short_prompt(), args.tokens, model)[1]

    def ttft(name: str, tag: str, r: int) -> float:
        base, model = sides[name]
        return stream(base, f"[ttft {tag}] " + short_prompt(), 2, model)[0]

    def aggregate(n: int, name: str, tag: str, r: int) -> float:
        base, model = sides[name]
        return burst(base, n, args.tokens, f"{tag}-x{n}", model)

    out: dict[str, dict[str, float]] = {name: {} for name in sides}
    for name, values in alternate(args.rounds * 2, names, decode).items():
        out[name]["decode tok/s, 1 stream"] = statistics.median(values)
    for name, values in alternate(args.rounds * 4, names, ttft).items():
        out[name]["TTFT p50, short prompt (ms)"] = pct(values, 50) * 1000
    for n in args.levels:
        for name, values in alternate(args.rounds, names, functools.partial(aggregate, n)).items():
            out[name][f"aggregate tok/s, {n} streams"] = statistics.median(values)
    return out


def report(results: dict[str, dict[str, float]], pairs: list[tuple[str, str]]) -> None:
    rows = list(next(iter(results.values())))
    names = list(results)
    print(f"{'row':<34}" + "".join(f"{n:>16}" for n in names))
    for row in rows:
        print(f"{row:<34}" + "".join(f"{results[n][row]:>16.1f}" for n in names))
    for ours, theirs in pairs:
        cells = []
        for row in rows:
            a, b = results[ours][row], results[theirs][row]
            cells.append(f"{row.split(',')[0].split(' (')[0]}{row.split(',')[1] if ',' in row else ''}: "
                         f"{(b / a if '(ms)' in row else a / b):.2f}x")  # fmt: skip
        print(f"{ours} vs {theirs}: " + "; ".join(cells))
    print(">= 1.00x: the first side at or above the second (tok/s: first / second; latency: second / first)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", default="qwen2.5-0.5b")
    ap.add_argument("--quant", default="q8_0", help="the catalog's cuda variants are Q8_0")
    ap.add_argument("--parallel", type=int, default=64, help="slots on every side (vLLM: --max-num-seqs)")
    ap.add_argument("--threads", type=int, default=4, help="CPU threads for the llama.cpp sides")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", default="1,4,16,64", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--start-vllm", action="store_true", help="start vLLM here on a random-weight checkpoint")
    ap.add_argument("--vllm-url", help="a running vLLM's base URL (…/v1) serving the same shape")
    ap.add_argument("--vllm-model", default="bench", help="the model name the running vLLM serves")
    ap.add_argument("--cpu", action="store_true", help="no GPU: a smoke run of this script on CPU builds")
    args = ap.parse_args()
    if args.parallel < max(args.levels):
        ap.error(f"--parallel {args.parallel} is below the top --levels value {max(args.levels)}")
    device = "cpu" if args.cpu else "cuda"
    gpu = "none (--cpu smoke run)" if args.cpu else require_gpu()
    path = synthetic_model(args.like, args.quant)
    binary = llama_server_binary(cuda=not args.cpu)

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lokal-bench-gpu-")))
        llama_base = stack.enter_context(
            llama_server(binary, path, args.threads, args.parallel, gpu_layers=0 if args.cpu else -1)
        )
        upstream: Side | None = None
        if args.start_vllm:
            upstream = stack.enter_context(vllm_server(args.like, args.parallel, work))
        elif args.vllm_url:
            upstream = args.vllm_url.rstrip("/"), args.vllm_model
        elif args.cpu:
            upstream = llama_base, "bench"  # the remote path measured against a real engine, on CPU
        entries = [tiny_entry("bench", path, ["general"], context_length=CTX_PER_SLOT)]
        entries[0]["variants"] = [{"id": f"bench-{device}:1", "device": device, "engine": "llamacpp",
                                   "path": str(path), **({} if args.cpu else {"gpu_layers": -1})}]  # fmt: skip
        if upstream is not None:
            remote = {"id": "upstream-remote:1", "engine": "remote", "base_url": upstream[0],
                      "upstream_model": upstream[1], "max_concurrency": args.parallel}  # fmt: skip
            entries.append({"alias": "upstream", "capabilities": ["general"], "variants": [remote]})
        home = work / "home"
        write_catalog(home, entries)
        env = {"LOKAL_PARALLEL": str(args.parallel), "LOKAL_N_THREADS": str(args.threads), "LOKAL_DEVICE": device}
        lokal = stack.enter_context(LokalServer(home, env=env))
        httpx.post(lokal.url + "/lokal/models/bench/load", timeout=600).raise_for_status()
        ps = httpx.get(lokal.url + "/lokal/ps", timeout=30).json()
        loaded = {k: ps["models"][0].get(k) for k in ("id", "device", "gpu_layers", "slots")} if ps["models"] else {}
        sides: dict[str, Side] = {"lokal": (lokal.base_url, "bench"), "llama-server": (llama_base, "bench")}
        pairs = [("lokal", "llama-server")]
        if upstream is not None:
            them = "vLLM" if not args.cpu or args.vllm_url else "llama-server (upstream)"
            sides["lokal->upstream"] = (lokal.base_url, "upstream")
            if them != "llama-server (upstream)":
                sides[them] = upstream
                pairs += [("lokal->upstream", them), ("lokal", them)]
            else:
                pairs.append(("lokal->upstream", "llama-server"))
        results = measure(sides, args)

    shape = SHAPES[args.like]
    where = "on the CPU" if args.cpu else "all on the GPU"
    print(f"\nGPU: {gpu}; {args.like} {args.quant} (SYNTHETIC random weights, {shape.n_layer} layers {where})")
    print(f"{args.parallel} slots, {args.tokens} tokens a stream, {args.rounds} rounds alternating")
    print(f"lokal's engine as loaded: {loaded} (gpu_layers -1: every layer on the GPU)")
    report(results, pairs)


if __name__ == "__main__":
    main()
