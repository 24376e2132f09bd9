"""Routing decision latency: rules vs semantic (MiniLM) intent detection, p50/p95 per prompt, side by side.

Every prompt is distinct (the 210 held-out prompts), so the semantic figures are real encodes, not memo hits;
a memo-hit row is printed separately. "decide" is the whole ``Router.plan`` (detection + escalation + ranking
over a 4-model catalog), "detect" is detection alone. Encoders compared for the semantic path: one-thread
onnxruntime (the router's default) and the shared torch embedder with its default and with one thread.

    python benchmarks/bench_routing.py [--rounds 2] [--no-torch] [--json]

The machine may be shared: the load average before and after is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lokal.embeddings import Encoder
from lokal.router.catalog import CatalogStore, parse_catalog
from lokal.router.engine import IntentEngine
from lokal.router.evaluate import read_labeled
from lokal.router.intents import (
    CombinedDetector,
    FitParams,
    RuleDetector,
    SemanticDetector,
    load_intent_spec,
    shipped_data_path,
)
from lokal.router.router import Router

CATALOG = {
    "models": {
        "small": {"capabilities": ["general", "summarize", "fast"], "priority": 1, "fallbacks": ["big"]},
        "coder": {"capabilities": ["code", "refactor"], "priority": 1, "fallbacks": ["small"]},
        "classifier": {"capabilities": ["classification", "translation"], "priority": 2},
        "big": {"capabilities": ["general", "reasoning", "code"], "priority": 3, "tier": 2},
    }
}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timed(fn: Callable[[str], Any], prompts: list[str], rounds: int) -> list[float]:
    for p in prompts[:5]:  # warm caches, allocators, lazy imports
        fn(p + " (warm-up)")
    out = []
    for r in range(rounds):
        for p in prompts:
            # A round suffix keeps every call a fresh prompt for the semantic memo.
            text = p if r == 0 else f"{p} #{r}"
            t0 = time.perf_counter()
            fn(text)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def router_for(engine: IntentEngine, mode: str) -> Router:
    data = dict(CATALOG, policy={"detector": mode})
    return Router(
        CatalogStore(None, parse_catalog(data)),
        local_base_url="http://127.0.0.1:9/v1",
        intents=engine,
        resident=lambda cat: set(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch encoder rows")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    load_before = os.getloadavg()
    prompts = [r.prompt for r in read_labeled(shipped_data_path("labeled-heldout.jsonl"))]
    spec = load_intent_spec()
    fit = FitParams.load(None)
    rules = RuleDetector(spec)
    rows: list[tuple[str, list[float]]] = []

    rows.append(("rules: detect", timed(rules.detect, prompts, args.rounds)))
    rule_engine = IntentEngine(None, spec=spec, fit=fit)
    r = router_for(rule_engine, "rules")
    rows.append(
        ("rules: decide (Router.plan)", timed(lambda p: r.plan([{"role": "user", "content": p}]), prompts, args.rounds))
    )

    encoders: list[tuple[str, Callable[[], Encoder], Callable[[], None]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        from lokal.embeddings.onnx import load_onnx_minilm

        onnx_home = Path(os.environ.get("LOKAL_HOME", tmp)) / "router"
        t0 = time.perf_counter()
        onnx = load_onnx_minilm(onnx_home)
        print(f"onnx encoder ready in {time.perf_counter() - t0:.1f} s ({onnx_home})", file=sys.stderr)
        encoders.append(("onnxruntime 1 thread", lambda: onnx, lambda: None))
        if not args.no_torch:
            import torch

            from lokal.embeddings.torch_st import get_embedder

            default_threads = torch.get_num_threads()
            encoders.append(
                (f"torch {default_threads} threads", get_embedder, lambda: torch.set_num_threads(default_threads))
            )
            encoders.append(("torch 1 thread", get_embedder, lambda: torch.set_num_threads(1)))

        for name, make, setup in encoders:
            setup()
            enc = make()
            sem = SemanticDetector(spec, enc, fit)
            comb = CombinedDetector(rules, sem)
            rows.append((f"semantic [{name}]: detect", timed(sem.detect, prompts, args.rounds)))
            sem2 = SemanticDetector(spec, enc, fit)
            comb2 = CombinedDetector(rules, sem2)
            rows.append((f"combined [{name}]: detect", timed(comb2.detect, prompts, args.rounds)))
            eng = IntentEngine(None, spec=spec, fit=fit, encoder_factory=_const(enc))
            eng.warm()
            rc = router_for(eng, "combined")
            rows.append(
                (
                    f"combined [{name}]: decide (Router.plan)",
                    timed(_planner(rc), prompts, args.rounds),
                )
            )
            hit = prompts[0]
            comb.detect(hit)
            rows.append((f"combined [{name}]: memo hit", [_once(comb.detect, hit) for _ in range(200)]))

    load_after = os.getloadavg()
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after},
        "prompts": len(prompts),
        "rounds": args.rounds,
        "rows": [
            {"what": n, "n": len(v), "p50_ms": round(pct(v, 50), 3), "p95_ms": round(pct(v, 95), 3)} for n, v in rows
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{len(prompts)} distinct prompts x {args.rounds} rounds; {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(f"{'':52} {'p50 ms':>9} {'p95 ms':>9}")
    for row in result["rows"]:
        print(f"{row['what']:52} {row['p50_ms']:9.3f} {row['p95_ms']:9.3f}")


def _planner(router: Router) -> Callable[[str], Any]:
    return lambda p: router.plan([{"role": "user", "content": p}])


def _const(enc: Encoder) -> Callable[[], Encoder]:
    return lambda: enc


def _once(fn: Callable[[str], Any], text: str) -> float:
    t0 = time.perf_counter()
    fn(text)
    return (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    main()
