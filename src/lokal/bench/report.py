"""Renderings of a `BenchResult`: rich table, JSON (authoritative), CSV, Markdown, HTML with PNG plots."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from lokal.bench.metrics import METRIC_NAMES, Stats
from lokal.bench.result import BenchResult, ModelResult, StepResult
from lokal.bench.verdict import Verdict, describe, verdict

Format = Literal["table", "json", "csv", "md", "html"]
FORMATS: tuple[str, ...] = ("table", "json", "csv", "md", "html")
_STAT_FIELDS = ("mean", "min", "max", "p50", "p90", "p95", "p99")


def format_for(path: str | Path) -> Format:
    suffix = Path(path).suffix.lower().lstrip(".")
    mapping: dict[str, Format] = {
        "json": "json",
        "csv": "csv",
        "md": "md",
        "markdown": "md",
        "html": "html",
        "htm": "html",
    }
    if suffix not in mapping:
        raise ValueError(f"cannot tell the report format from {path!s}; use --format")
    return mapping[suffix]


def _ms(s: Stats | None, field: str = "p50") -> str:
    return "-" if s is None else f"{getattr(s, field) * 1000:.1f}"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _mib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def _rows(result: BenchResult) -> Iterator[tuple[ModelResult, StepResult | None]]:
    for m in result.models:
        if not m.steps:
            yield m, None
        for s in m.steps:
            yield m, s


COLUMNS = (
    "model",
    "load",
    "status",
    "ok/err",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "ITL p50 ms",
    "ITL p95 ms",
    "TPOT ms",
    "E2E p50 ms",
    "E2E p95 ms",
    "tok/s req p50",
    "tok/s total",
    "req/s",
    "goodput/s",
    "in tok",
    "out tok",
    "mem MiB",
    "load s",
    "cold s",
)


def _compact(m: ModelResult, s: StepResult | None) -> list[str]:
    mem = _mib(m.server.memory_bytes) if m.server else "-"
    load = _num(m.server.load_seconds, ".2f") if m.server else "-"
    cold = _num(m.cold_start_s, ".2f")
    if s is None:
        return [m.label, "-", m.status, "0/0", *["-"] * 13, mem, load, cold]
    sm = s.summary
    est = "" if sm.token_source in ("usage", "none") else "~"  # estimated counts are marked
    in_tok, out_tok = sm.stat("prompt_tokens"), sm.stat("completion_tokens")
    tps = sm.stat("output_tps")
    status = m.status + (" *best*" if m.best_step is not None and m.steps.index(s) == m.best_step else "")
    return [
        m.label,
        s.pattern.label,
        status,
        f"{sm.success}/{sm.errors}",
        _ms(sm.stat("ttft_s")),
        _ms(sm.stat("ttft_s"), "p95"),
        _ms(sm.stat("itl_s")),
        _ms(sm.stat("itl_s"), "p95"),
        _ms(sm.stat("tpot_s"), "mean"),
        _ms(sm.stat("e2e_s")),
        _ms(sm.stat("e2e_s"), "p95"),
        _num(tps.p50 if tps else None),
        f"{est}{sm.output_throughput:.1f}",
        f"{sm.request_throughput:.2f}",
        _num(sm.goodput, ".2f"),
        est + _num(in_tok.mean if in_tok else None, ".0f"),
        est + _num(out_tok.mean if out_tok else None, ".0f"),
        mem,
        load,
        cold,
    ]


# The terminal gets the columns people decide on; the files carry all of them.
TERMINAL_COLUMNS = (
    "model",
    "load",
    "status",
    "ok/err",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "ITL p50 ms",
    "E2E p50 ms",
    "E2E p95 ms",
    "tok/s req p50",
    "tok/s total",
    "req/s",
    "out tok",
    "mem MiB",
)


def rich_table(result: BenchResult) -> Table:
    table = Table(title=f"lokal bench · {result.config.get('endpoint')}", header_style="bold")
    keep = [COLUMNS.index(c) for c in TERMINAL_COLUMNS]
    for col in TERMINAL_COLUMNS:
        left = col in ("model", "load", "status")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for m, s in _rows(result):
        style = "red" if m.status == "failed" else ("yellow" if m.status == "partial" else None)
        row = _compact(m, s)
        table.add_row(*(row[i] for i in keep), style=style)
    return table


def errors(result: BenchResult) -> list[tuple[str, str]]:
    return [(m.label, m.error) for m in result.models if m.error]


def to_json(result: BenchResult) -> str:
    return json.dumps(result.to_dict(), indent=2)


def csv_rows(result: BenchResult) -> list[dict[str, Any]]:
    """One row per (model, load level) with every statistic of every metric flattened into columns."""
    rows = []
    for m, s in _rows(result):
        row: dict[str, Any] = {
            "model": m.entry.name,
            "label": m.name,
            # Next to the figures, in every row: a spreadsheet filtered to one model still says it.
            "synthetic": "" if m.synthetic is None else str(m.synthetic).lower(),
            "endpoint": m.endpoint,
            "status": m.status,
            "error": m.error or "",
            "load": s.pattern.label if s else "",
            "tags": ";".join(m.entry.tags),
            "size_b": m.entry.size_b,
            "server_memory_bytes": m.server.memory_bytes if m.server else None,
            "server_rss_bytes": m.server.server_rss_bytes if m.server else None,
            "load_seconds": m.server.load_seconds if m.server else None,
            "cold_start_s": m.cold_start_s,
        }
        sm = s.summary if s else None
        for key in (
            "requests",
            "success",
            "errors",
            "duration_s",
            "request_throughput",
            "output_throughput",
            "total_token_throughput",
            "mean_concurrency",
            "max_in_flight",
            "goodput",
            "slo_attainment",
            "token_source",
        ):
            row[key] = getattr(sm, key) if sm else None
        for name in METRIC_NAMES:
            st = sm.stat(name) if sm else None
            for f in _STAT_FIELDS:
                row[f"{name}_{f}"] = getattr(st, f) if st else None
        rows.append(row)
    return rows


def to_csv(result: BenchResult) -> str:
    rows = csv_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["model"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def run_line(result: BenchResult) -> str:
    """What was run, in one line: the conditions every figure below depends on."""
    cfg = result.config
    n_prompts = len(cfg.get("prompts", []))
    mode = "deterministic" if cfg.get("deterministic") else f"temperature {cfg.get('temperature')}"
    return (
        f"{result.created} · endpoint {cfg.get('endpoint')} · {n_prompts} prompts × {cfg.get('rounds')} rounds "
        f"(+{cfg.get('warmup_rounds')} warm-up) · max_tokens {cfg.get('max_tokens')} · "
        f"{'stream' if cfg.get('stream') else 'no stream'} · {mode}"
    )


def verdict_lines(v: Verdict) -> list[str]:
    """The verdict as plain sentences, shared by the terminal, Markdown and HTML."""
    lines = [v.headline]
    if v.synthetic_note:
        lines.append(v.synthetic_note)
    lines.append(f"{v.rule}.")
    return lines


def _decomposition(result: BenchResult) -> list[tuple[str, str, list[str]]]:
    keys = ("phase_prepare_s", "phase_send_s", "phase_first_token_s", "phase_completion_s")
    return [(m.label, s.pattern.label, [_ms(s.summary.stat(k), "mean") for k in keys]) for m, s in _rows(result) if s]


def _estimated(result: BenchResult) -> bool:
    return any(s and s.summary.token_source not in ("usage", "none") for _, s in _rows(result))


def to_markdown(result: BenchResult) -> str:
    v = verdict(result)
    lines = ["# lokal bench", "", run_line(result), "", "## Verdict", ""]
    lines += [f"**{_md_escape(v.headline)}**", ""]
    if v.synthetic_note:
        lines += [f"> **{_md_escape(v.synthetic_note)}**", ""]
    lines += [f"_{_md_escape(v.rule)}._", ""]
    lines += [f"- {_md_escape(describe(mv))}" for mv in v.models]
    lines += [
        "",
        "## All figures",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in _compact(m, s)) + " |" for m, s in _rows(result)]
    if _estimated(result):
        lines += ["", "`~` token counts are estimates (the endpoint returned no usage)."]
    errs = errors(result)
    if errs:
        lines += ["", "## Errors", ""] + [f"- **{_md_escape(n)}**: {_md_escape(e)}" for n, e in errs]
    lines += [
        "",
        "## Latency decomposition (mean ms)",
        "",
        "| model | load | prepare | send | first token | completion |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_md_escape(name)} | {load} | " + " | ".join(vals) + " |" for name, load, vals in _decomposition(result)
    ]
    lines += ["", "## Sample outputs", ""]
    for m in result.models:
        for pid, text in list(m.samples.items())[:3]:
            lines.append(f"- **{_md_escape(m.label)}** / `{pid}`: {_md_escape(text[:300])}")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin:1rem 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}
tr.failed td{background:#fde2e2}tr.partial td{background:#fff5d6}
.verdict{border-left:6px solid #2a7;background:#f1faf5;padding:0.6rem 1rem;margin:1rem 0}
.verdict.none{border-color:#c33;background:#fdf1f1}
.verdict .headline{font-size:1.25rem;font-weight:600;margin:0.2rem 0 0.6rem}
.warning{border:2px solid #d80;background:#fff4e0;padding:0.5rem 1rem;font-weight:600}
.best td{font-weight:600}
img{max-width:100%;margin:0.5rem 0;border:1px solid #eee}
pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{color:#666}
"""


def _html_table(headers: tuple[str, ...] | list[str], rows: list[tuple[str, list[str]]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in headers)
    body = "".join(f'<tr class="{e(cls)}">' + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for cls, row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(result: BenchResult, plot_files: list[str]) -> str:
    """Verdict first (what a decision needs), then the key figures, plots, and every figure for the record."""
    e = html.escape
    v = verdict(result)
    best = v.best.model if v.best else None
    per_model = _html_table(
        ["model", "verdict", "output tok/s", "mem MiB", "n"],
        [
            (
                "best" if mv.model is best else mv.model.status,
                [
                    mv.model.label + (" (best)" if mv.model is best else ""),
                    mv.why,
                    _num(mv.throughput),
                    _num(mv.memory_mib, ".0f"),
                    str(mv.n),
                ],
            )
            for mv in v.models
        ],
    )
    synthetic = f'<p class="warning">{e(v.synthetic_note)}</p>' if v.synthetic_note else ""
    keep = [COLUMNS.index(c) for c in TERMINAL_COLUMNS]
    compact: list[tuple[str, list[str]]] = [(m.status, _compact(m, s)) for m, s in _rows(result)]
    key_table = _html_table(TERMINAL_COLUMNS, [(cls, [row[i] for i in keep]) for cls, row in compact])
    full_table = _html_table(COLUMNS, compact)
    decomposition = _html_table(
        ["model", "load", "prepare", "send", "first token", "completion"],
        [("", [name, load, *vals]) for name, load, vals in _decomposition(result)],
    )
    errs = "".join(f"<li><b>{e(n)}</b>: {e(msg)}</li>" for n, msg in errors(result))
    imgs = "".join(f'<img src="{e(p)}" alt="{e(Path(p).stem)}">' for p in plot_files)
    samples = "".join(
        f"<h3>{e(m.label)}</h3>"
        + "".join(f"<p><code>{e(pid)}</code></p><pre>{e(t[:1000])}</pre>" for pid, t in m.samples.items())
        for m in result.models
    )
    env = "".join(f"<dt>{e(str(k))}</dt><dd>{e(str(val))}</dd>" for k, val in result.environment.items())
    estimated = "<p><code>~</code> token counts are estimates (the endpoint returned no usage).</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lokal bench</title><style>{_CSS}</style>"
        f"</head><body><h1>lokal bench</h1><p>{e(run_line(result))}</p>"
        f'<section class="verdict{"" if v.best else " none"}" id="verdict"><h2>Verdict</h2>'
        f'<p class="headline">{e(v.headline)}</p>{synthetic}<p><i>{e(v.rule)}.</i></p>{per_model}</section>'
        f"<h2>Key figures</h2>{key_table}"
        + (estimated if _estimated(result) else "")
        + (f"<h2>Errors</h2><ul>{errs}</ul>" if errs else "")
        + (f"<h2>Plots</h2>{imgs}" if imgs else "")
        + f"<h2>Latency decomposition (mean ms)</h2>{decomposition}"
        + f"<h2>Sample outputs</h2>{samples}"
        + f"<details><summary>Every figure ({len(COLUMNS)} columns)</summary>{full_table}</details>"
        + f"<details><summary>Environment</summary><dl>{env}</dl></details></body></html>"
    )


def write_report(result: BenchResult, path: str | Path, fmt: Format | None = None) -> list[Path]:
    """Write `result` to `path`; returns every file written (the HTML report brings its PNGs along)."""
    p = Path(path)
    fmt = fmt or format_for(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        p.write_text(to_json(result), encoding="utf-8")
    elif fmt == "csv":
        p.write_text(to_csv(result), encoding="utf-8", newline="")
    elif fmt == "md":
        p.write_text(to_markdown(result), encoding="utf-8")
    elif fmt == "html":
        from lokal.bench.plots import write_plots

        folder = p.with_name(p.stem + "_plots")
        pngs = write_plots(result, folder)
        p.write_text(to_html(result, [f"{folder.name}/{png.name}" for png in pngs]), encoding="utf-8")
        return [p, *pngs]
    else:
        raise ValueError(f"format {fmt!r} is written to the terminal, not to a file")
    return [p]
