"""Renderings of a `CompareResult`: rich tables, Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Group
from rich.table import Table

from lokal.bench.compare import ROLES, RUBRIC, CompareResult

COLUMNS = (
    "role",
    "model",
    "status",
    "TTFT p50 ms",
    "E2E p50 ms",
    "E2E mean ms",
    "out tok",
    "tok/s",
    "mem MB",
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
                    m.name,
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
                    f"{result.small.name} -> {result.large.name}",
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


def rich_tables(result: CompareResult) -> Group:
    table = Table(title="lokal compare", header_style="bold")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("role", "model", "status") else "right")
    for row in summary_rows(result):
        table.add_row(*row)
    parts: list[Table] = [table]
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
    return Group(*parts)


def _md(text: str, limit: int = 200) -> str:
    t = text.replace("|", "\\|").replace("\n", " ")
    return t if len(t) <= limit else t[:limit] + "…"


def to_markdown(result: CompareResult) -> str:
    lines = ["# lokal compare", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
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
            lines.append(f"- **{role}**{score}: {_md(text, 400)}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_compare(result: CompareResult, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".json":
        p.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    elif p.suffix.lower() in (".md", ".markdown"):
        p.write_text(to_markdown(result), encoding="utf-8")
    else:
        raise ValueError(f"{p}: compare reports are .json or .md")
    return p
