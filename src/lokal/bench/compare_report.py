"""Renderings of a `CompareResult`: rich tables, Markdown, HTML and JSON, each leading with its conclusion."""

from __future__ import annotations

import html
import json
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lokal.bench.compare import ROLES, RUBRIC, CompareResult
from lokal.bench.compare_verdict import conclusion, synthetic_note

COLUMNS = (
    "role",
    "model",
    "status",
    "TTFT p50 ms",
    "E2E p50 ms",
    "E2E mean ms",
    "out tok",
    "tok/s",
    "mem MiB",
    "coherence",
    "factuality",
    "concision",
    "cloud $/1k req",
    "local $/1k req",
    "kWh/1k req",
)


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def summary_rows(result: CompareResult) -> list[list[str]]:
    quality = result.quality()
    rows = []
    for role in ROLES:
        cost = result.costs.get(role)
        if role == "hybrid" and result.hybrid is None:
            continue
        q = [_f(quality[role][n], ".2f") for n in RUBRIC]
        money = [
            _f(
                cost.per_request(cost.cloud_usd * 1000) if cost and cost.cloud_usd is not None else None,
                ".4f",
            ),
            _f(cost.per_request(cost.local_usd * 1000) if cost else None, ".4f"),
            _f(
                cost.per_request(cost.energy_kwh * 1000) if cost and cost.energy_kwh is not None else None,
                ".3f",
            ),
        ]
        m = result.model(role)
        if m is not None:
            step = m.main_step
            sm = step.summary if step else None
            ttft = sm.stat("ttft_s") if sm else None
            e2e = sm.stat("e2e_s") if sm else None
            tok = sm.stat("completion_tokens") if sm else None
            tps = sm.stat("output_tps") if sm else None
            mem = m.server.memory_bytes if m.server and m.server.memory_bytes else None
            rows.append(
                [
                    role,
                    m.label,
                    m.status,
                    _f(ttft.p50 * 1000 if ttft else None),
                    _f(e2e.p50 * 1000 if e2e else None),
                    _f(e2e.mean * 1000 if e2e else None),
                    _f(tok.mean if tok else None, ".0f"),
                    _f(tps.p50 if tps else None),
                    _f(mem / 2**20 if mem else None, ".0f"),
                    *q,
                    *money,
                ]
            )
        else:
            lat = result.hybrid_latency()
            rate = result.refine_rate
            blended = lat.get("blended_s")
            tokens = cost.completion_tokens / cost.requests if cost and cost.requests else None
            rows.append(
                [
                    role,
                    f"{result.small.label} -> {result.large.label}",
                    f"refined {_f((rate or 0) * 100, '.0f')}%",
                    "-",
                    "-",
                    _f(blended * 1000 if blended is not None else None),
                    _f(tokens, ".0f"),
                    "-",
                    "-",
                    *q,
                    *money,
                ]
            )
    return rows


def lead(result: CompareResult) -> list[str]:
    """Conclusion, synthetic warning and notes: what every format says before its tables."""
    return [conclusion(result), *filter(None, [synthetic_note(result)]), *result.notes]


def rich_tables(result: CompareResult) -> Group:
    table = Table(title=f"lokal compare · {result.config.get('endpoint')}", header_style="bold")
    for c in COLUMNS:
        # Model names are what the reader decides on: folded onto two lines, never cut to "qwen2.5-…".
        left = c in ("role", "model", "status")
        table.add_column(c, justify="left" if left else "right", overflow="fold" if c == "model" else "ellipsis")
    for row in summary_rows(result):
        table.add_row(*row)
    parts: list[Table | Text] = [table]
    if result.hybrid:
        h = Table(title="hybrid draft -> refine", header_style="bold")
        for c in ("prompt", "refined", "reason", "draft ms", "refine ms", "total ms"):
            h.add_column(c, justify="left" if c in ("prompt", "reason") else "right")
        for r in result.hybrid:
            h.add_row(
                r.prompt_id,
                "yes" if r.refined else "no",
                r.reason or "-",
                _f(r.draft_s * 1000 if r.draft_s is not None else None),
                _f(r.refine_s * 1000 if r.refine_s is not None else None),
                _f(r.total_s * 1000 if r.total_s is not None else None),
            )
        parts.append(h)
    parts += [Text(line, style="bold" if i == 0 else "yellow") for i, line in enumerate(lead(result))]
    return Group(*parts)


def _md(text: str, limit: int = 200) -> str:
    t = text.replace("|", "\\|").replace("\n", " ")
    return t if len(t) <= limit else t[:limit] + "…"


def to_markdown(result: CompareResult) -> str:
    first, *rest = lead(result)
    lines = ["# lokal compare", "", f"**{_md(first, 2000)}**", ""]
    lines += [f"> {_md(line, 2000)}" for line in rest] + ([""] if rest else [])
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in summary_rows(result)]
    lat = result.hybrid_latency()
    if result.hybrid is not None:
        lines += [
            "",
            "## Hybrid draft -> refine",
            "",
            f"Refine rate {_f((result.refine_rate or 0) * 100, '.0f')}% · mean draft "
            f"{_f((lat.get('draft_s') or 0) * 1000)} ms · mean refine (when refined) "
            f"{_f((lat.get('refine_s_when_refined') or 0) * 1000)} ms · blended mean "
            f"{_f((lat.get('blended_s') or 0) * 1000)} ms",
            "",
            "| prompt | refined | reason | draft ms | refine ms |",
            "|---|---|---|---|---|",
        ]
        for h in result.hybrid:
            lines.append(
                f"| {h.prompt_id} | {'yes' if h.refined else 'no'} | {_md(h.reason or '-')} | "
                f"{_f(h.draft_s * 1000 if h.draft_s is not None else None)} | "
                f"{_f(h.refine_s * 1000 if h.refine_s is not None else None)} |"
            )
    lines += ["", "## Outputs", ""]
    for row in result.rows:
        lines.append(f"### {row.prompt.id}")
        lines.append("")
        lines.append(f"> {_md(row.prompt.text, 300)}")
        lines.append("")
        for role, text in row.outputs.items():
            s = row.scores.get(role)
            score = (
                ""
                if s is None or s.mean is None
                else (f" — {s.source}: " + ", ".join(f"{n} {getattr(s, n) or '-'}" for n in RUBRIC))
            )
            who = {"small": result.small.label, "large": result.large.label}.get(role, role)
            lines.append(f"- **{role}** ({_md(who)}){score}: {_md(text, 400)}")
        lines.append("")
    return "\n".join(lines) + "\n"


def to_json(result: CompareResult) -> str:
    return json.dumps(result.to_dict() | {"conclusion": conclusion(result)}, indent=2)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin:1rem 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child,td:nth-child(2){text-align:left}
.verdict{border-left:6px solid #2a7;background:#f1faf5;padding:0.6rem 1rem;margin:1rem 0}
.verdict .headline{font-size:1.2rem;font-weight:600}
.note{border:2px solid #d80;background:#fff4e0;padding:0.5rem 1rem}
pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;font-size:12px}
"""


def to_html(result: CompareResult) -> str:
    """The same report as the Markdown, conclusion first, as one self-contained page (no scripts, no fonts)."""
    e = html.escape
    first, *rest = lead(result)
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in summary_rows(result))
    hybrid = ""
    if result.hybrid:
        cells = "".join(
            f"<tr><td>{e(h.prompt_id)}</td><td>{'yes' if h.refined else 'no'}</td><td>{e(h.reason or '-')}</td>"
            f"<td>{_f(h.draft_s * 1000 if h.draft_s is not None else None)}</td>"
            f"<td>{_f(h.refine_s * 1000 if h.refine_s is not None else None)}</td></tr>"
            for h in result.hybrid
        )
        hybrid = (
            "<h2>Hybrid draft -&gt; refine</h2><table><tr><th>prompt</th><th>refined</th><th>reason</th>"
            f"<th>draft ms</th><th>refine ms</th></tr>{cells}</table>"
        )
    who = {"small": result.small.label, "large": result.large.label, "hybrid": "hybrid"}
    outputs = "".join(
        f"<h3>{e(row.prompt.id)}</h3><blockquote>{e(row.prompt.text[:600])}</blockquote>"
        + "".join(
            f"<p><b>{e(role)}</b> ({e(who.get(role, role))})</p><pre>{e(t[:1500])}</pre>"
            for role, t in row.outputs.items()
        )
        for row in result.rows
    )
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in rest)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lokal compare</title><style>{_CSS}</style>"
        f"</head><body><h1>lokal compare</h1><p>endpoint {e(str(result.config.get('endpoint')))}</p>"
        f'<section class="verdict" id="verdict"><h2>Conclusion</h2><p class="headline">{e(first)}</p>{notes}'
        f"</section><table><tr>{head}</tr>{body}</table>{hybrid}<h2>Outputs</h2>{outputs}</body></html>"
    )


def write_compare(result: CompareResult, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".json":
        p.write_text(to_json(result), encoding="utf-8")
    elif suffix in (".md", ".markdown"):
        p.write_text(to_markdown(result), encoding="utf-8")
    elif suffix in (".html", ".htm"):
        p.write_text(to_html(result), encoding="utf-8")
    else:
        raise ValueError(f"{p}: compare reports are .json, .md or .html")
    return p
