"""`lokal route`: route one prompt, calibrate intent thresholds, evaluate detectors, inspect the catalog."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from lokal.cli import _common
from lokal.config import get_settings
from lokal.errors import LokalError
from lokal.router.catalog import CatalogError, load_catalog
from lokal.router.evaluate import EvalReport, evaluate, fit, read_labeled
from lokal.router.intents import FIT_FILE, CombinedDetector, FitParams, RuleDetector, SemanticDetector
from lokal.router.serving import find_catalog_file


class _AskByDefault(TyperGroup):
    """`lokal route "PROMPT"` means `lokal route ask "PROMPT"`; named subcommands still win."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors click's Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["ask", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_AskByDefault, no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="LOKAL_HOME (default: from settings).")]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url", "-u", envvar="LOKAL_BASE_URL", help="The lokal server (/v1 optional) [LOKAL_HOST:LOKAL_PORT]."
    ),
]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Router catalog (default: LOKAL_HOME/router.yaml).")]


def _home(home: Path | None) -> Path:
    return home or get_settings().home


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {getattr(exc, 'message', None) or exc}")
    raise typer.Exit(1)


@app.command("ask")
def ask(
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads stdin.")],
    router: Annotated[str, typer.Option("--router", "-r", help="'auto' or a preset name.")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the decision, call nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 512,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    trace: Annotated[Path | None, typer.Option("--trace", help="Append a trace event to this JSONL file.")] = None,
    home: HomeOpt = None,
    base_url: BaseUrlOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Route PROMPT to the best model and print its answer as it is written (and why it was chosen)."""
    from lokal.router.factory import build_router

    if prompt == "-":
        prompt = sys.stdin.read()
    try:
        r = build_router(home=_home(home), base_url=_common.api_url(base_url), catalog_path=catalog, trace_path=trace)
    except Exception as exc:
        _fail(exc)
    messages = [{"role": "user", "content": prompt}]
    try:
        if dry_run:
            t0 = time.perf_counter()
            d = r.plan(messages, router=router, max_tokens=max_tokens)
            ms = (time.perf_counter() - t0) * 1000
            if as_json:
                out.print_json(data=_decision_dict(d) | {"decision_ms": round(ms, 2)})
            else:
                out.print(f"[bold]{d.primary.model}[/bold]  {d.reason}")
                out.print("candidates: " + ", ".join(f"{c.model} ({c.role})" for c in d.candidates))
            return
        stream = r.stream(messages, router=router, params={"max_tokens": max_tokens, "temperature": temperature})
        if not as_json:
            err.print(
                f"[dim]{stream.model} | {stream.decision.reason}{' | fallback' if stream.fallback_used else ''}[/dim]"
            )
        for piece in stream:
            if not as_json:
                out.file.write(piece)
                out.file.flush()
        res = stream.result
    except LokalError as exc:
        _fail(exc)
    finally:
        r.close()
    assert res is not None
    if as_json:
        out.print_json(
            data={
                "model": res.model,
                "content": res.content,
                "latency_ms": round(res.latency_ms, 1),
                "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens,
                "cost_usd": res.cost_usd,
                "cache_hit": res.cache_hit,
                "fallback_used": res.fallback_used,
                "attempts": res.attempts,
                "decision": _decision_dict(res.decision),
            }
        )
        return
    out.file.write("\n")
    err.print(
        f"[dim]{res.latency_ms:.0f} ms | {res.prompt_tokens}+{res.completion_tokens} tok"
        f"{' | cache hit' if res.cache_hit else ''}[/dim]"
    )


def _decision_dict(d: Any) -> dict[str, Any]:
    return {
        "router": d.router,
        "intent": d.intent,
        "confidence": round(d.confidence, 4),
        "method": d.method,
        "escalated": d.escalated,
        "reason": d.reason,
        "trace_id": d.trace_id,
        "candidates": [
            {"model": c.model, "upstream_model": c.upstream_model, "endpoint": c.endpoint, "role": c.role}
            for c in d.candidates
        ],
        "scores": dict(d.scores),
    }


def _detectors(
    home: Path, fit_params: FitParams | None = None
) -> tuple[RuleDetector, SemanticDetector, CombinedDetector]:
    from lokal.router.engine import IntentEngine

    found = IntentEngine(home, fit=fit_params).detectors()
    if found is None:
        err.print("[red]error:[/red] the embedding model is unavailable; install lokal[embed]")
        raise typer.Exit(1)
    return found


@app.command("fit")
def fit_cmd(
    examples: Annotated[Path, typer.Argument(help='JSONL lines {"prompt": ..., "intent": ...}.')],
    output: Annotated[Path | None, typer.Option("--out", help=f"Default: LOKAL_HOME/router/{FIT_FILE}.")] = None,
    no_examples: Annotated[
        bool,
        typer.Option("--thresholds-only", help="Calibrate thresholds without adding the prompts as examples."),
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Learn from labeled prompts: add them as example utterances and calibrate per-intent thresholds."""
    from lokal.router.engine import IntentEngine

    h = _home(home)
    try:
        rows = read_labeled(examples)
        eng = IntentEngine(h, fit=FitParams())
        params = fit(eng.spec, _encoder(h), rows, str(examples), add_examples=not no_examples)
    except LokalError as exc:
        _fail(exc)
    dest = output or h / "router" / FIT_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(params.to_json() + "\n", encoding="utf-8")
    t = Table(title=f"fitted on {len(rows)} prompts -> {dest}")
    t.add_column("intent")
    t.add_column("semantic threshold", justify="right")
    t.add_column("combined threshold", justify="right")
    for k in sorted(params.semantic):
        t.add_row(k, f"{params.semantic[k]:.3f}", f"{params.combined.get(k, 0.0):.3f}")
    out.print(t)
    out.print(f"rule bonus: {params.rule_bonus:g}")


def _encoder(home: Path) -> Any:
    from lokal.embeddings.query import query_encoder

    return query_encoder(home)


@app.command("eval")
def eval_cmd(
    labeled: Annotated[Path, typer.Argument(help='JSONL lines {"prompt": ..., "intent": ...} (held out).')],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    fit_file: Annotated[Path | None, typer.Option("--fit", help="Fit file to use (default: the active one).")] = None,
    errors: Annotated[int, typer.Option("--errors", help="Show up to N misrouted prompts per method.")] = 0,
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="rules | semantic | combined (repeatable; default: all three)."),
    ] = None,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Accuracy, per-intent precision/recall and confusion matrix for rules vs semantic vs combined, and
    model accuracy: how often the detected intent makes the catalog's policy choose the labelled intent's model."""
    from lokal.router.engine import IntentEngine
    from lokal.router.evaluate import eval_catalog

    h = _home(home)
    wanted = list(dict.fromkeys(methods or ["rules", "semantic", "combined"]))
    if bad := [m for m in wanted if m not in ("rules", "semantic", "combined")]:
        _fail(ValueError(f"unknown method(s) {', '.join(bad)}: use rules, semantic or combined"))
    try:
        rows = read_labeled(labeled)
        cat, cat_source = eval_catalog(h, catalog)
        fit_params = FitParams.from_file(fit_file) if fit_file else None
        if wanted == ["rules"]:  # the rules need no embedding model
            dets: dict[str, Any] = {"rules": IntentEngine(h, fit=fit_params).rules}
        else:
            dets = dict(zip(("rules", "semantic", "combined"), _detectors(h, fit_params), strict=True))
    except LokalError as exc:
        _fail(exc)
    reports: list[EvalReport] = [evaluate(m, dets[m], rows, cat) for m in wanted]
    default = cat.policy.detector if cat is not None else "combined"
    if as_json:
        data: dict[str, Any] = {"n": len(rows), "file": str(labeled), "reports": [r.to_dict() for r in reports]}
        data |= {"catalog": cat_source, "default_method": default}
        out.print_json(data=data)
        return
    for rep in reports:
        _print_report(rep, errors)
        if rep.models is not None:
            out.print(f"{rep.method}: model accuracy {rep.models.accuracy:.3f} ({rep.models.note()})")
            for e in rep.models.errors[:errors]:
                out.print(
                    f"  [dim]wrong model {e['chosen_model']} (want {e['expected_model']}; "
                    f"{e['intent']} -> {e['predicted']}):[/dim] {e['prompt'][:100]}"
                )
    t = Table(title=f"summary (catalog: {cat_source})")
    t.add_column("method")
    t.add_column("accuracy", justify="right")
    t.add_column("macro F1", justify="right")
    t.add_column("model accuracy", justify="right")
    for r in reports:
        macro = sum(s.f1 for s in r.per_intent.values()) / len(r.per_intent)
        model_acc = f"{r.models.accuracy:.3f}" if r.models is not None else "-"
        name = r.method + (" (default)" if r.method == default else "")
        t.add_row(name, f"{r.accuracy:.3f}", f"{macro:.3f}", model_acc)
    out.print(t)
    if cat is None:
        out.print("[dim]no catalog: pass --catalog PATH for model accuracy[/dim]")
    elif reports and reports[0].models is not None:
        m = reports[0].models
        groups: dict[str, list[str]] = {}
        for intent, model in m.intent_models.items():
            groups.setdefault(str(model), []).append(intent)
        out.print(m.note() + ": " + "; ".join(f"{', '.join(v)} -> {k}" for k, v in groups.items()))


def _print_report(rep: EvalReport, errors: int) -> None:
    t = Table(title=f"{rep.method}: accuracy {rep.accuracy:.3f} on {rep.n} prompts")
    t.add_column("intent")
    for col in ("precision", "recall", "F1", "n"):
        t.add_column(col, justify="right")
    for k, s in rep.per_intent.items():
        t.add_row(k, f"{s.precision:.2f}", f"{s.recall:.2f}", f"{s.f1:.2f}", str(s.support))
    out.print(t)
    c = Table(title=f"{rep.method}: confusion (rows = true, columns = predicted)")
    c.add_column("")
    for lab in rep.labels:
        c.add_column(lab[:8], justify="right")
    for lab, row in zip(rep.labels, rep.confusion, strict=True):
        c.add_row(lab, *[str(v) if v else "." for v in row])
    out.print(c)
    for e in rep.errors[:errors]:
        out.print(f"  [dim]{e['intent']} -> {e['predicted']}:[/dim] {e['prompt'][:100]}")


@app.command("catalog")
def catalog_cmd(
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Validate and show the router catalog (or the default derived from the server's models)."""
    from lokal.router.factory import models_from_server

    path = catalog or find_catalog_file(_home(home))
    try:
        if path.is_file():
            cat = load_catalog(path)
            source = str(path)
        else:
            cat = models_from_server(_common.api_url(base_url))
            source = f"default from {_common.api_url(base_url)}/models (no {path})"
    except CatalogError as exc:
        _fail(exc)
    except Exception as exc:
        _fail(exc)
    t = Table(title=f"router catalog: {source}")
    for col in ("model", "capabilities", "priority", "tier", "$/1M", "context", "endpoint", "fallbacks"):
        t.add_column(col)
    for name, m in cat.models.items():
        t.add_row(
            name,
            ", ".join(m.capabilities),
            str(m.priority),
            str(m.tier),
            f"{m.cost_per_1m:g}",
            str(m.max_context),
            m.endpoint,
            ", ".join(m.fallbacks),
        )
    out.print(t)
    if cat.presets:
        out.print("presets: " + ", ".join(["auto", *cat.presets]))
    out.print(json.dumps({"detector": cat.policy.detector, "escalation": cat.policy.escalation.model_dump()}))
