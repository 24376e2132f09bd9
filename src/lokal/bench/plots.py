"""PNG plots for the HTML report (matplotlib, Agg backend: no display needed).

One colour per model, fixed by its place in the run, in every plot; a plot with nothing to show (a "vs
concurrency" line through a single load level) is not drawn at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lokal.bench.result import BenchResult, ModelResult


def colours(result: BenchResult) -> dict[str, str]:
    """Model name -> matplotlib colour cycle entry, the same in every plot of the report."""
    return {m.entry.name: f"C{i % 10}" for i, m in enumerate(result.models)}


def _levels(m: ModelResult) -> int:
    return len({round(s.summary.mean_concurrency, 1) for s in m.steps})


def has_load_curve(result: BenchResult) -> bool:
    """A vs-concurrency plot says something only when some model was measured at two or more load levels."""
    return any(_levels(m) >= 2 for m in result.models if m.status != "failed")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_distribution(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names, ttft, e2e, cols = [], [], [], []
    palette = colours(result)
    for m in result.models:
        step = m.main_step
        if step is None or m.status == "failed":
            continue
        ok = [r for r in step.records if r.ok]
        names.append(f"{m.label}\n(n={len(ok)})")
        cols.append(palette[m.entry.name])
        ttft.append([r.ttft_s * 1000 for r in ok if r.ttft_s is not None] or [0.0])
        e2e.append([r.e2e_s * 1000 for r in ok if r.e2e_s is not None] or [0.0])
    for ax, data, title in ((axes[0], ttft, "Time to first token"), (axes[1], e2e, "End-to-end latency")):
        if data:
            box = ax.boxplot(data, tick_labels=names, showfliers=True, patch_artist=True)
            for patch, colour in zip(box["boxes"], cols, strict=True):
                patch.set_facecolor(colour)
                patch.set_alpha(0.55)
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
    palette = colours(result)
    for m in result.models:
        if m.status == "failed" or _levels(m) < 2:
            continue
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
        colour = palette[m.entry.name]
        ax.plot(xs, [p[1] for p in pts], marker="o", color=colour, label=f"{m.label} p50")
        ax.plot(xs, [p[2] for p in pts], marker="x", linestyle="--", color=colour, label=f"{m.label} p95")
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
    names, agg, per_req, cols = [], [], [], []
    palette = colours(result)
    for m in result.models:
        step = m.main_step
        if step is None or m.status == "failed":
            continue
        names.append(f"{m.label}\n(n={step.summary.success})")
        cols.append(palette[m.entry.name])
        agg.append(step.summary.output_throughput)
        tps = step.summary.stat("output_tps")
        per_req.append(tps.p50 if tps else 0.0)
    xs = list(range(len(names)))
    # Colour says which model, hatching says which figure: the legend stays about the two kinds of bar.
    ax.bar([x - 0.2 for x in xs], agg, width=0.4, color=cols, label="aggregate")
    ax.bar([x + 0.2 for x in xs], per_req, width=0.4, color=cols, alpha=0.5, hatch="//", label="per request (p50)")
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
    stale = folder / "ttft_vs_concurrency.png"
    stale.unlink(missing_ok=True)  # a report rewritten from a one-level run must not show an old curve
    plots = [latency_distribution(result, folder / "latency_distribution.png")]
    if has_load_curve(result):
        plots.append(ttft_vs_concurrency(result, stale))
    plots.append(tokens_per_second(result, folder / "tokens_per_second.png"))
    return plots
