"""PNG plots for the HTML report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lokal.bench.result import BenchResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_distribution(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names, ttft, e2e = [], [], []
    for m in result.models:
        step = m.main_step
        if step is None or m.status == "failed":
            continue
        ok = [r for r in step.records if r.ok]
        names.append(m.name)
        ttft.append([r.ttft_s * 1000 for r in ok if r.ttft_s is not None] or [0.0])
        e2e.append([r.e2e_s * 1000 for r in ok if r.e2e_s is not None] or [0.0])
    for ax, data, title in ((axes[0], ttft, "Time to first token"), (axes[1], e2e, "End-to-end latency")):
        if data:
            ax.boxplot(data, tick_labels=names, showfliers=True)
        ax.set_title(title)
        ax.set_ylabel("ms")
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ttft_vs_concurrency(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m in result.models:
        pts = []
        for s in m.steps:
            t = s.summary.stat("ttft_s") or s.summary.stat("e2e_s")
            if t is not None:
                # Little's law concurrency puts the closed-loop and open-loop levels on one axis.
                pts.append((s.summary.mean_concurrency, t.p50 * 1000, t.p95 * 1000))
        if not pts:
            continue
        pts.sort()
        xs = [p[0] for p in pts]
        line = ax.plot(xs, [p[1] for p in pts], marker="o", label=f"{m.name} p50")[0]
        ax.plot(xs, [p[2] for p in pts], marker="x", linestyle="--", color=line.get_color(), label=f"{m.name} p95")
    ax.set_xlabel("mean requests in flight")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT vs concurrency")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tokens_per_second(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names, agg, per_req = [], [], []
    for m in result.models:
        step = m.main_step
        if step is None or m.status == "failed":
            continue
        names.append(m.name)
        agg.append(step.summary.output_throughput)
        tps = step.summary.stat("output_tps")
        per_req.append(tps.p50 if tps else 0.0)
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], agg, width=0.4, label="aggregate")
    ax.bar([x + 0.2 for x in xs], per_req, width=0.4, label="per request (p50)")
    ax.set_xticks(xs, names, rotation=20)
    ax.set_ylabel("output tokens/s")
    ax.set_title("Output tokens per second")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(result: BenchResult, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        latency_distribution(result, folder / "latency_distribution.png"),
        ttft_vs_concurrency(result, folder / "ttft_vs_concurrency.png"),
        tokens_per_second(result, folder / "tokens_per_second.png"),
    ]
