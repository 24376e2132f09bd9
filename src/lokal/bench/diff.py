"""`lokal bench diff a.json b.json`: what changed between two runs, model by model, judged against noise.

Two guards keep a diff honest. Runs made under different conditions (max_tokens, warm-up, load pattern,
prompt set, ...) are not comparable, and `unlike_configs` names every difference so the CLI can refuse.
And a change only counts as a regression when it is both larger than the threshold and larger than the
runs' own run-to-run noise: each metric is bootstrapped from the per-request samples both runs saved
(resampling requests with replacement), and the change must hold across the 95 % interval. With a handful
of requests on a noisy machine that interval is wide, and a ±30 % swing at n=8 reads "within noise".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rich.table import Table

from lokal.bench.metrics import RequestRecord
from lokal.bench.result import BenchResult, ModelResult

Verdict = Literal["regressed", "improved", "within noise", "unchanged", "missing", "no samples"]
BOOTSTRAP = 2000  # resamples: enough for a stable 95 % interval, a few ms per metric
MIN_SAMPLES = 3  # fewer requests than this cannot tell noise from change

# (label, metric or summary field, statistic, higher_is_better)
COMPARED: tuple[tuple[str, str, str | None, bool], ...] = (
    ("TTFT p50 (ms)", "ttft_s", "p50", False),
    ("TTFT p95 (ms)", "ttft_s", "p95", False),
    ("ITL p50 (ms)", "itl_s", "p50", False),
    ("ITL p95 (ms)", "itl_s", "p95", False),
    ("E2E p50 (ms)", "e2e_s", "p50", False),
    ("E2E p95 (ms)", "e2e_s", "p95", False),
    ("tok/s per request p50", "output_tps", "p50", True),
    ("output tok/s total", "output_throughput", None, True),
    ("requests/s", "request_throughput", None, True),
    ("errors", "errors", None, False),
)

# Conditions a figure depends on. Any difference here makes the two runs measure different things.
MUST_MATCH = (
    "max_tokens",
    "warmup_rounds",
    "pattern",
    "sweep",
    "prompts",
    "stream",
    "temperature",
    "seed",
    "ignore_eos",
    "extra_body",
    "slo",
)


def unlike_configs(a: BenchResult, b: BenchResult) -> list[str]:
    """'max_tokens: 128 vs 64' for every condition the two runs differ in (empty when comparable)."""
    out = []
    for key in MUST_MATCH:
        va, vb = a.config.get(key), b.config.get(key)
        if va != vb:
            out.append(f"{key}: {_short(va)} vs {_short(vb)}")
    return out


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class DiffRow:
    model: str
    metric: str
    a: float | None
    b: float | None
    higher_is_better: bool
    verdict: Verdict
    ci_pct: tuple[float, float] | None = None  # 95 % interval of the relative change, percent
    n: tuple[int, int] = (0, 0)  # per-request samples behind A and B

    @property
    def regressed(self) -> bool:
        return self.verdict in ("regressed", "missing")

    @property
    def delta_pct(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / abs(self.a) * 100

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "delta_pct": self.delta_pct,
            "ci95_pct": list(self.ci_pct) if self.ci_pct else None,
            "n": list(self.n),
            "verdict": self.verdict,
            "regressed": self.regressed,
        }


def _value(m: ModelResult, metric: str, stat: str | None) -> float | None:
    step = m.main_step
    if step is None:
        return None
    sm = step.summary
    if stat is None:
        return float(getattr(sm, metric))
    st = sm.stat(metric)
    if st is None:
        return None
    value = float(getattr(st, stat))
    return value * 1000 if metric.endswith("_s") else value


Sampler = Callable[[np.ndarray], np.ndarray]  # resample indices (B x n) -> statistic per resample


def _samples(m: ModelResult, metric: str, stat: str | None) -> tuple[int, Callable[[np.ndarray], np.ndarray]] | None:
    """The per-request sample behind a figure, and the figure computed on resampled request indices."""
    step = m.main_step
    if step is None:
        return None
    ok: list[RequestRecord] = [r for r in step.records if r.ok]
    if metric == "errors":
        return None
    if stat is not None:
        if metric == "itl_s":  # one sample per request: its median gap (a request's gaps are not independent)
            vals = [float(np.median(r.itl_s)) for r in ok if r.itl_s]
        else:
            vals = [v for v in (getattr(r, metric) for r in ok) if v is not None]
        arr = np.asarray(vals, dtype=np.float64)
        q = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}.get(stat)
        if q is None or arr.size == 0:
            return None
        return arr.size, lambda idx: np.percentile(arr[idx], q, axis=1)
    # Throughputs are ratios over the run (tokens or requests per second of wall time); their noise is the
    # ratio estimator's: sum of tokens over sum of latencies, resampled by request.
    lat = np.asarray([r.e2e_s or 0.0 for r in ok], dtype=np.float64)
    num = (
        np.asarray([r.completion_tokens or 0 for r in ok], dtype=np.float64)
        if metric == "output_throughput"
        else np.ones(len(ok))
    )
    if not ok or lat.sum() <= 0:
        return None
    return len(ok), lambda idx: num[idx].sum(axis=1) / np.maximum(lat[idx].sum(axis=1), 1e-12)


def _interval(sa: tuple[int, Sampler], sb: tuple[int, Sampler], seed: int) -> tuple[float, float] | None:
    (na, fa), (nb, fb) = sa, sb
    rng = np.random.default_rng(seed)
    ra = fa(rng.integers(0, na, size=(BOOTSTRAP, na)))
    rb = fb(rng.integers(0, nb, size=(BOOTSTRAP, nb)))
    valid = ra != 0
    if not valid.any():
        return None
    change = (rb[valid] - ra[valid]) / np.abs(ra[valid]) * 100
    lo, hi = np.percentile(change, [2.5, 97.5])
    return float(lo), float(hi)


def _judge(
    va: float, vb: float, higher: bool, threshold_pct: float, ci: tuple[float, float] | None, n: tuple[int, int]
) -> Verdict:
    if va == 0:
        return "unchanged" if vb == 0 else ("improved" if (vb > 0) == higher else "regressed")
    change = (vb - va) / abs(va) * 100
    worse = -change if higher else change
    if abs(change) <= threshold_pct:
        return "unchanged"
    if ci is None or min(n) < MIN_SAMPLES:
        return "no samples"  # past the threshold, but nothing to tell it from noise: not called a regression
    lo, hi = ci
    worse_lo, worse_hi = (-hi, -lo) if higher else (lo, hi)  # the interval of "how much worse"
    if worse > 0 and worse_lo > 0:
        return "regressed"
    if worse < 0 and worse_hi < 0:
        return "improved"
    return "within noise"


def diff_results(a: BenchResult, b: BenchResult, *, threshold_pct: float = 10.0, seed: int = 0) -> list[DiffRow]:
    """Rows for every model in both runs. `regressed`: worse than the threshold and outside the noise."""
    rows: list[DiffRow] = []
    b_by_name = {m.entry.name: m for m in b.models}
    for ma in a.models:
        mb = b_by_name.get(ma.entry.name)
        if mb is None:
            continue
        for i, (label, metric, stat, higher) in enumerate(COMPARED):
            va, vb = _value(ma, metric, stat), _value(mb, metric, stat)
            if va is None and vb is None:
                continue
            if va is not None and vb is None:  # measured before, missing now: the model failed
                rows.append(DiffRow(ma.label, label, va, vb, higher, "missing"))
                continue
            if va is None or vb is None:
                rows.append(DiffRow(ma.label, label, va, vb, higher, "unchanged"))
                continue
            if metric == "errors":
                verdict: Verdict = "regressed" if vb > va else ("improved" if vb < va else "unchanged")
                rows.append(DiffRow(ma.label, label, va, vb, higher, verdict))
                continue
            sa, sb = _samples(ma, metric, stat), _samples(mb, metric, stat)
            ci = _interval(sa, sb, seed + i) if sa and sb else None
            n = (sa[0] if sa else 0, sb[0] if sb else 0)
            rows.append(DiffRow(ma.label, label, va, vb, higher, _judge(va, vb, higher, threshold_pct, ci, n), ci, n))
    return rows


def only_in(a: BenchResult, b: BenchResult) -> tuple[list[str], list[str]]:
    na, nb = {m.entry.name for m in a.models}, {m.entry.name for m in b.models}
    return sorted(na - nb), sorted(nb - na)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _change(r: DiffRow) -> str:
    pct = r.delta_pct
    return "-" if pct is None else f"{pct:+.1f}%"


def _ci(r: DiffRow) -> str:
    return "-" if r.ci_pct is None else f"{r.ci_pct[0]:+.0f}..{r.ci_pct[1]:+.0f}%"


_MARK = {"regressed": "REGRESSED", "missing": "REGRESSED (missing)", "improved": "improved"}


def mark(r: DiffRow) -> str:
    """The verdict cell: regressions in capitals, so every format (and grep) finds them."""
    return _MARK.get(r.verdict, r.verdict)


def diff_table(rows: list[DiffRow], title: str = "bench diff") -> Table:
    table = Table(title=title, header_style="bold")
    for col in ("model", "metric", "A", "B", "change", "95% interval", "n A/B", "verdict"):
        table.add_column(col, justify="left" if col in ("model", "metric", "verdict") else "right")
    for r in rows:
        style = "red" if r.regressed else ("green" if r.verdict == "improved" else None)
        n = f"{r.n[0]}/{r.n[1]}" if any(r.n) else "-"
        table.add_row(r.model, r.metric, _fmt(r.a), _fmt(r.b), _change(r), _ci(r), n, mark(r), style=style)
    return table


def diff_markdown(rows: list[DiffRow], warnings: list[str] | None = None) -> str:
    lines = [f"> **warning:** {w}" for w in warnings or []]
    lines += [""] if lines else []
    lines += [
        "| model | metric | A | B | change | 95% interval | n A/B | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f"**{mark(r)}**" if r.regressed else mark(r)
        lines.append(
            f"| {r.model} | {r.metric} | {_fmt(r.a)} | {_fmt(r.b)} | {_change(r)} | {_ci(r)} | "
            f"{r.n[0]}/{r.n[1]} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def diff_csv(rows: list[DiffRow]) -> str:
    import csv
    import io

    buf = io.StringIO()
    fields = ["model", "metric", "a", "b", "delta_pct", "ci95_low_pct", "ci95_high_pct", "n_a", "n_b", "verdict"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                "model": r.model,
                "metric": r.metric,
                "a": r.a,
                "b": r.b,
                "delta_pct": r.delta_pct,
                "ci95_low_pct": r.ci_pct[0] if r.ci_pct else None,
                "ci95_high_pct": r.ci_pct[1] if r.ci_pct else None,
                "n_a": r.n[0],
                "n_b": r.n[1],
                "verdict": mark(r),
            }
        )
    return buf.getvalue()


def diff_html(rows: list[DiffRow], warnings: list[str] | None = None, title: str = "bench diff") -> str:
    import html

    e = html.escape
    warn = "".join(
        f'<p style="border:2px solid #d80;padding:4px 8px"><b>warning:</b> {e(w)}</p>' for w in warnings or []
    )
    head = "".join(f"<th>{c}</th>" for c in ("model", "metric", "A", "B", "change", "95% interval", "n A/B", "verdict"))
    body = "".join(
        f'<tr class="{e(r.verdict.replace(" ", "-"))}"'
        + (' style="background:#fde2e2"' if r.regressed else "")
        + ">"
        + "".join(
            f"<td>{e(c)}</td>"
            for c in (r.model, r.metric, _fmt(r.a), _fmt(r.b), _change(r), _ci(r), f"{r.n[0]}/{r.n[1]}", mark(r))
        )
        + "</tr>"
        for r in rows
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title></head>"
        f"<body style='font-family:system-ui,sans-serif'><h1>{e(title)}</h1>{warn}"
        f"<table border=1 cellpadding=4 style='border-collapse:collapse'><tr>{head}</tr>{body}</table></body></html>"
    )
