"""In-browser WASM decode speed against the server's, on the same random-weight shape, measured in the page.

One shape, two builds: a GGUF (f32) served by `lokal serve` (llama.cpp) and a web model (fp32 ONNX in
transformers.js's layout) run by the playground's in-page engine in headless Chromium (WASM, threads: the
page is cross-origin isolated). Both answers are timed by the page itself (the latency chart's numbers), one
path at a time so that they do not share the CPU; rounds alternate which goes first.

    python benchmarks/bench_browser.py [--layers 4] [--width 256] [--tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import LokalServer  # noqa: E402

from lokal.catalog.synth import synthesize, synthesize_web  # noqa: E402
from lokal.config import get_settings  # noqa: E402
from lokal.gguf.synthetic import ModelShape  # noqa: E402

CHROMIUM = os.environ.get("LOKAL_TEST_CHROMIUM", "/usr/bin/chromium")


def one(page: Any, url: str, engine: str, model: str, tokens: int) -> dict[str, float]:
    page.goto(f"{url}/?engine={engine}&model={model}")
    page.wait_for_selector("#server-status[data-state=ok]")
    page.fill("#max-tokens", str(tokens))
    page.dispatch_event("#max-tokens", "change")
    page.fill("#prompt", "Write a long story about a lighthouse keeper.")
    page.press("#prompt", "Enter")
    page.wait_for_selector("#pane-a .msg.assistant:not([data-state=streaming])", timeout=600_000)
    bars: dict[str, float] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#chart rect.bar')]
              .map((r) => [r.dataset.metric, Number(r.dataset.value)]))"""
    )
    bars["path"] = page.get_attribute("#pane-a .msg.assistant", "data-path") or "?"  # type: ignore[assignment]
    bars["tokens"] = float(page.get_attribute("#pane-a .msg.assistant", "data-tokens") or 0)
    return bars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    shape = ModelShape(n_layer=args.layers, n_embd=args.width, n_head=4, n_head_kv=2, n_ff=args.width * 2,
                       n_vocab=args.vocab, n_ctx=2048)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        home = Path(tmp) / "home"
        os.environ.update(LOKAL_HOME=str(home), LOKAL_OFFLINE="1")
        get_settings.cache_clear()
        settings = get_settings()
        synthesize(settings, "custom", "f32", "shape-gguf", shape=shape)
        synthesize_web(settings, "custom", "fp32", "shape-web", shape=shape)
        rows: dict[str, list[dict[str, float]]] = {"server": [], "browser": []}
        with LokalServer(home, args=["--model", "shape-gguf"]) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_context().new_page()  # one context: the web model loads once (Cache Storage)
            one(page, server.url, "browser", "shape-web", 4)  # warm-up: load the runtime and the model
            for r in range(args.rounds):
                order = [("server", "shape-gguf"), ("browser", "shape-web")]
                for engine, model in order if r % 2 == 0 else order[::-1]:
                    rows[engine].append(one(page, server.url, engine, model, args.tokens))
            browser.close()
    params = shape.parameters / 1e6
    print(f"shape: {args.layers} layers x {args.width} wide, vocab {args.vocab} ({params:.1f} M parameters, f32)")
    print(f"{args.rounds} rounds x {args.tokens} tokens, timed in the page (median)")
    print(f"{'path':<22}{'TTFT ms':>10}{'decode tok/s':>14}")
    for engine, recs in rows.items():
        path = recs[0]["path"] if recs else "?"
        ttft = statistics.median(r.get("ttft", float("nan")) for r in recs)
        tps = statistics.median(r.get("tps", float("nan")) for r in recs)
        label = "server (llama.cpp)" if engine == "server" else f"browser ({path})"
        print(f"{label:<22}{ttft:>10.1f}{tps:>14.1f}")


if __name__ == "__main__":
    main()
