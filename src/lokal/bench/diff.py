"""`lokal bench diff a.json b.json`: what changed between two runs, model by model."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from lokal.bench.result import BenchResult, ModelResult

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


@dataclass(frozen=True, slots=True)
class DiffRow:
    model: str
    metric: str
    a: float | None
    b: float | None
    higher_is_better: bool
    regressed: bool

    @property
    def delta_pct(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / abs(self.a) * 100


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


def diff_results(a: BenchResult, b: BenchResult, *, threshold_pct: float = 10.0) -> list[DiffRow]:
    """Rows for every model in both runs; `regressed` when b is worse than a by more than `threshold_pct`."""
    rows: list[DiffRow] = []
    b_by_name = {m.entry.name: m for m in b.models}
    for ma in a.models:
        mb = b_by_name.get(ma.entry.name)
        if mb is None:
            continue
        for label, metric, stat, higher in COMPARED:
            va, vb = _value(ma, metric, stat), _value(mb, metric, stat)
            if va is None and vb is None:
                continue
            regressed = False
            if va is not None and vb is not None:
                if metric == "errors":
                    regressed = vb > va
                elif va != 0:
                    change = (vb - va) / abs(va) * 100
                    regressed = change < -threshold_pct if higher else change > threshold_pct
            elif va is not None and vb is None:
                regressed = True  # measured before, missing now: the model failed
            rows.append(DiffRow(ma.name, label, va, vb, higher, regressed))
    return rows


def only_in(a: BenchResult, b: BenchResult) -> tuple[list[str], list[str]]:
    na, nb = {m.entry.name for m in a.models}, {m.entry.name for m in b.models}
    return sorted(na - nb), sorted(nb - na)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def diff_table(rows: list[DiffRow], title: str = "bench diff") -> Table:
    table = Table(title=title, header_style="bold")
    for col in ("model", "metric", "A", "B", "change"):
        table.add_column(col, justify="left" if col in ("model", "metric") else "right")
    for r in rows:
        pct = r.delta_pct
        change = "-" if pct is None else f"{pct:+.1f}%"
        table.add_row(r.model, r.metric, _fmt(r.a), _fmt(r.b), change, style="red" if r.regressed else None)
    return table


def diff_markdown(rows: list[DiffRow]) -> str:
    lines = ["| model | metric | A | B | change | regressed |", "|---|---|---|---|---|---|"]
    for r in rows:
        pct = r.delta_pct
        lines.append(
            f"| {r.model} | {r.metric} | {_fmt(r.a)} | {_fmt(r.b)} | "
            f"{'-' if pct is None else f'{pct:+.1f}%'} | {'yes' if r.regressed else ''} |"
        )
    return "\n".join(lines) + "\n"
