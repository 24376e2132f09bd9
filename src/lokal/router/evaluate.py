"""Calibrating intent thresholds on labeled prompts, and scoring detectors on a held-out set.

Labeled files are JSONL, one ``{"prompt": ..., "intent": ...}`` per line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lokal.errors import InvalidRequest
from lokal.router.intents import (
    GENERAL,
    Detector,
    Encoder,
    FitParams,
    IntentSpec,
    RuleDetector,
    SemanticDetector,
)

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


@dataclass(slots=True)
class EvalReport:
    method: str
    accuracy: float
    n: int
    labels: list[str]
    per_intent: dict[str, IntentStats]
    confusion: list[list[int]]  # rows: true label, columns: predicted, both in ``labels`` order
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
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


def score_predictions(method: str, rows: Sequence[Labeled], predicted: Sequence[str]) -> EvalReport:
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
    return EvalReport(method, correct / len(rows), len(rows), labels, per, confusion, errors)


def evaluate(method: str, detector: Detector, rows: Sequence[Labeled]) -> EvalReport:
    prime = getattr(getattr(detector, "semantic", detector), "prime", None)
    if callable(prime):
        prime([r.prompt for r in rows])
    return score_predictions(method, rows, [detector.detect(r.prompt).intent for r in rows])
