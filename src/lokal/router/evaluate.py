"""Calibrating intent thresholds on labeled prompts, and scoring detectors on a held-out set.

Labeled files are JSONL, one ``{"prompt": ..., "intent": ...}`` per line. Given a router catalog, a detector
is also scored on the model it makes the router choose: two intents served by the same model are no error
for the user, so "model accuracy" is the figure that matters once the catalog is known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lokal.embeddings import Encoder
from lokal.errors import InvalidRequest
from lokal.router.catalog import RouterCatalog
from lokal.router.intents import (
    GENERAL,
    Detector,
    FitParams,
    IntentSpec,
    RuleDetector,
    SemanticDetector,
)
from lokal.router.policy import Health, rank
from lokal.router.upstream import estimate_tokens

if TYPE_CHECKING:
    import numpy as np

RULE_BONUS_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True, slots=True)
class Labeled:
    prompt: str
    intent: str


def read_labeled(path: Path) -> list[Labeled]:
    rows: list[Labeled] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            rows.append(Labeled(str(d["prompt"]), str(d["intent"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidRequest(f'{path}:{n}: expected {{"prompt": ..., "intent": ...}} ({exc})') from None
    if not rows:
        raise InvalidRequest(f"{path}: no labeled prompts")
    return rows


def _best_threshold(group: list[tuple[float, bool, bool]]) -> float:
    """Threshold for one intent among prompts whose top score is that intent.

    Each item is (score, label is this intent, label is general). Predictions at or above the threshold
    keep the intent, below it become general: maximise how many of the group end up right.
    """
    if not group:
        return 0.0
    scores = sorted({s for s, _, _ in group})
    cands = [scores[0] - 1e-3] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)]
    cands.append(scores[-1] + 1e-3)
    best_t, best_ok = cands[0], -1
    for t in cands:
        ok = sum(1 for s, pos, gen in group if (pos and s >= t) or (gen and s < t))
        # Ties go to the lowest threshold: wrongly answering as a generalist costs more than it saves.
        if ok > best_ok:
            best_t, best_ok = t, ok
    return round(float(best_t), 4)


def _fit_thresholds(
    intents: Sequence[str], score_rows: Sequence[np.ndarray], labels: Sequence[str]
) -> tuple[dict[str, float], int]:
    groups: dict[str, list[tuple[float, bool, bool]]] = {i: [] for i in intents if i != GENERAL}
    correct = 0
    for scores, label in zip(score_rows, labels, strict=True):
        top = intents[int(scores.argmax())]
        if top == GENERAL:
            correct += label == GENERAL
            continue
        groups[top].append((float(scores.max()), label == top, label == GENERAL))
    thresholds = {i: _best_threshold(g) for i, g in groups.items()}
    for i, g in groups.items():
        t = thresholds[i]
        correct += sum(1 for s, pos, gen in g if (pos and s >= t) or (gen and s < t))
    return thresholds, correct


def fit(
    spec: IntentSpec,
    encoder: Encoder,
    rows: Sequence[Labeled],
    source: str = "",
    *,
    add_examples: bool = True,
) -> FitParams:
    """Learn from labeled prompts: keep them as extra example utterances, then calibrate per-intent
    thresholds (semantic and combined) and the rule bonus. Each prompt is scored leave-one-out, without
    itself among the examples, so the thresholds are not fitted to perfect self-matches."""
    unknown = sorted({r.intent for r in rows} - set(spec.intents))
    if unknown:
        raise InvalidRequest(f"labels {unknown} are not known intents ({', '.join(spec.intents)})")
    examples: dict[str, list[str]] = {}
    if add_examples:
        for r in rows:
            examples.setdefault(r.intent, []).append(r.prompt)
    sem = SemanticDetector(spec, encoder, FitParams(examples=examples))
    rules = RuleDetector(spec)
    labels = [r.intent for r in rows]
    sem.prime([r.prompt for r in rows])
    sem_scores = [sem.scores(r.prompt, exclude_identical=True) for r in rows]
    sem_thr, _ = _fit_thresholds(sem.intents, sem_scores, labels)
    hits = [rules.hits(r.prompt) for r in rows]
    best: tuple[int, float, dict[str, float]] | None = None
    for bonus in RULE_BONUS_GRID:
        rows_scores = []
        for s, h in zip(sem_scores, hits, strict=True):
            c = s.copy()
            for idx, name in enumerate(sem.intents):
                if name in h:
                    c[idx] += bonus
            rows_scores.append(c)
        thr, ok = _fit_thresholds(sem.intents, rows_scores, labels)
        if best is None or ok > best[0]:
            best = (ok, bonus, thr)
    assert best is not None
    return FitParams(
        examples=examples,
        semantic=sem_thr,
        combined=best[2],
        rule_bonus=best[1],
        fitted_on=source,
        n_examples=len(rows),
    )


@dataclass(slots=True)
class IntentStats:
    precision: float
    recall: float
    f1: float
    support: int


def chosen_model(catalog: RouterCatalog, intent: str, prompt: str) -> str | None:
    """The model the "auto" router tries first for ``intent`` on ``prompt``: its pure ranking with an empty
    Health (nothing resident, cooling down or over budget) and no escalation, so the figure depends on the
    catalog, the intent and the prompt's length (context fit) alone and is the same on every machine.
    Escalation is left out because it mostly follows the prompt (length, topics), which moves the detected and
    the labelled choice alike."""
    ranked, _ = rank(
        catalog, intent, health=Health(), needed_context=estimate_tokens(prompt), preset=None, escalate=False
    )
    return ranked[0][0] if ranked else None


@dataclass(slots=True)
class ModelScore:
    """How often the detected intent sends a prompt to the model its labelled intent would have."""

    accuracy: float
    intent_models: dict[str, str | None]  # intent -> model chosen for a short prompt
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def distinct_models(self) -> int:
        return len({m for m in self.intent_models.values() if m is not None})

    @property
    def trivial(self) -> bool:
        """One model serves every intent: any detector scores 1.0, so the figure says nothing."""
        return self.distinct_models <= 1

    def note(self) -> str:
        n = self.distinct_models
        if self.trivial:
            return f"catalog has {n} distinct model: model accuracy is trivially 1"
        return f"catalog has {n} distinct models for {len(self.intent_models)} intents"

    def to_dict(self) -> dict[str, object]:
        return {
            "model_accuracy": round(self.accuracy, 4),
            "distinct_models": self.distinct_models,
            "trivial": self.trivial,
            "note": self.note(),
            "intent_models": self.intent_models,
            "model_errors": self.errors,
        }


def score_models(
    catalog: RouterCatalog, rows: Sequence[Labeled], predicted: Sequence[str], intents: Sequence[str]
) -> ModelScore:
    memo: dict[tuple[str, int], str | None] = {}

    def choose(intent: str, prompt: str) -> str | None:
        # Only the context filter looks at the prompt, through its token estimate.
        key = (intent, estimate_tokens(prompt))
        if key not in memo:
            memo[key] = chosen_model(catalog, intent, prompt)
        return memo[key]

    right = 0
    errors: list[dict[str, str]] = []
    for r, p in zip(rows, predicted, strict=True):
        want, got = choose(r.intent, r.prompt), choose(p, r.prompt)
        if want == got:
            right += 1
        else:
            errors.append(
                {
                    "prompt": r.prompt,
                    "intent": r.intent,
                    "predicted": p,
                    "expected_model": str(want),
                    "chosen_model": str(got),
                }
            )
    return ModelScore(right / len(rows), {i: chosen_model(catalog, i, "") for i in intents}, errors)


@dataclass(slots=True)
class EvalReport:
    method: str
    accuracy: float
    n: int
    labels: list[str]
    per_intent: dict[str, IntentStats]
    confusion: list[list[int]]  # rows: true label, columns: predicted, both in ``labels`` order
    errors: list[dict[str, str]] = field(default_factory=list)
    models: ModelScore | None = None  # with a catalog: scored on the model chosen, not the label

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "method": self.method,
            "accuracy": round(self.accuracy, 4),
            "n": self.n,
            "labels": self.labels,
            "per_intent": {
                k: {
                    "precision": round(v.precision, 4),
                    "recall": round(v.recall, 4),
                    "f1": round(v.f1, 4),
                    "support": v.support,
                }
                for k, v in self.per_intent.items()
            },
            "confusion": self.confusion,
        }
        if self.models is not None:
            d |= self.models.to_dict()
        return d


def score_predictions(
    method: str,
    rows: Sequence[Labeled],
    predicted: Sequence[str],
    catalog: RouterCatalog | None = None,
    intents: Sequence[str] = (),
) -> EvalReport:
    """``intents``: every intent the detector can answer (for the catalog's intent -> model table); the
    labels and predictions seen are always included."""
    labels = sorted({r.intent for r in rows} | set(predicted), key=lambda x: (x == GENERAL, x))
    pos = {lab: i for i, lab in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    errors = []
    for r, p in zip(rows, predicted, strict=True):
        confusion[pos[r.intent]][pos[p]] += 1
        if r.intent != p:
            errors.append({"prompt": r.prompt, "intent": r.intent, "predicted": p})
    per: dict[str, IntentStats] = {}
    for lab, i in pos.items():
        tp = confusion[i][i]
        pred_n = sum(row[i] for row in confusion)
        true_n = sum(confusion[i])
        prec = tp / pred_n if pred_n else 0.0
        rec = tp / true_n if true_n else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = IntentStats(prec, rec, f1, true_n)
    correct = sum(confusion[i][i] for i in range(len(labels)))
    models = None
    if catalog is not None:
        every = sorted({*labels, *intents}, key=lambda x: (x == GENERAL, x))
        models = score_models(catalog, rows, predicted, every)
    return EvalReport(method, correct / len(rows), len(rows), labels, per, confusion, errors, models)


def evaluate(
    method: str, detector: Detector, rows: Sequence[Labeled], catalog: RouterCatalog | None = None
) -> EvalReport:
    """Score ``detector`` on labeled ``rows``; with ``catalog``, also on the model the router would choose.
    Pure: the detector runs, no model is called."""
    prime = getattr(getattr(detector, "semantic", detector), "prime", None)
    if callable(prime):
        prime([r.prompt for r in rows])
    predicted = [detector.detect(r.prompt).intent for r in rows]
    return score_predictions(method, rows, predicted, catalog, _intents_of(detector))


def _intents_of(detector: Detector) -> list[str]:
    for obj in (detector, getattr(detector, "rules", None), getattr(detector, "semantic", None)):
        spec = getattr(obj, "spec", None)
        if isinstance(spec, IntentSpec):
            return spec.intents
    return []


def eval_catalog(home: Path, path: Path | None = None) -> tuple[RouterCatalog | None, str]:
    """The catalog to score models against, and where it came from: ``path``, else the active
    ``home/router.yaml``, else the default the server derives from downloaded local chat models (None when
    there are none). Reads files only; calls no model and no server."""
    from lokal.router.catalog import catalog_from_local_models, load_catalog
    from lokal.router.serving import find_catalog_file

    found = path or find_catalog_file(home)
    if path is not None or found.is_file():
        return load_catalog(found), str(found)
    from lokal.catalog.cache import Cache
    from lokal.catalog.catalog import Catalog
    from lokal.config import get_settings

    settings = get_settings()
    if settings.home != home:
        settings = settings.model_copy(update={"home": home})
    catalog, cache = Catalog.load(settings), Cache(settings)
    entries = [
        (s.alias, list(s.capabilities), s.context_length)
        for s in catalog.specs()
        if s.task == "chat-completion" and cache.is_cached(catalog.best_variant(s))
    ]
    if not entries:
        return None, f"no {found} and no downloaded chat model"
    return catalog_from_local_models(entries), f"default from {len(entries)} downloaded local model(s)"
