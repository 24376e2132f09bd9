"""Evaluation without a judge model: retrieval hit@k and MRR, answer token-F1 and citation coverage.

qa.jsonl: one object a line, {"question": ..., "expected_source": "guide.md" | [...], "expected_answer": ...};
either expectation may be left out (its metrics are then not computed for that line).
"""

from __future__ import annotations

import fnmatch
import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lokal.errors import InvalidRequest
from lokal.rag.answer import DEFAULT_MIN_SCORE, ask, parse_citations, split_answer_sentences
from lokal.rag.retrieve import Hit, Mode, Retriever

if TYPE_CHECKING:
    from openai import AsyncOpenAI


@dataclass(frozen=True, slots=True)
class QAItem:
    question: str
    sources: tuple[str, ...] = ()
    answer: str | None = None


def load_qa(path: Path) -> list[QAItem]:
    items: list[QAItem] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("question"), str)
            or not obj["question"].strip()
        ):
            raise InvalidRequest(f'{path}:{n}: each line needs a non-empty "question" string')
        src = obj.get("expected_source", obj.get("source", obj.get("expected_sources", ())))
        sources = (src,) if isinstance(src, str) else tuple(str(s) for s in src or ())
        ans = obj.get("expected_answer", obj.get("answer"))
        items.append(QAItem(obj["question"], sources, str(ans) if ans is not None else None))
    if not items:
        raise InvalidRequest(f"{path} holds no questions")
    return items


def source_matches(path: str, expected: str) -> bool:
    """An expected source matches the full path, a path suffix ("docs/guide.md"), or a shell pattern."""
    p, e = path.replace("\\", "/"), expected.replace("\\", "/")
    return p == e or p.endswith("/" + e.lstrip("/")) or fnmatch.fnmatchcase(p, e)


def first_relevant_rank(hits: Sequence[Hit], expected: Sequence[str]) -> int | None:
    for h in hits:
        if any(source_matches(h.source, e) for e in expected):
            return h.rank
    return None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction), normalize(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def citation_coverage(text: str, n_sources: int) -> float:
    """Share of the answer's sentences that carry at least one valid citation."""
    sentences = split_answer_sentences(text)
    if not sentences:
        return 0.0
    return sum(1 for s in sentences if parse_citations(s, n_sources)) / len(sentences)


@dataclass
class EvalRow:
    question: str
    expects_source: bool = False
    rank: int | None = None  # rank of the first chunk from an expected source; None = not retrieved
    answer: str | None = None
    f1: float | None = None
    coverage: float | None = None
    cited_expected: bool | None = None
    refused: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EvalReport:
    k: int
    mode: str
    rows: list[EvalRow] = field(default_factory=list)

    def _mean(self, values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    def summary(self) -> dict[str, float | int | None]:
        ranked = [r.rank for r in self.rows if r.expects_source]
        answered = [r for r in self.rows if r.refused is not None]
        return {
            "questions": len(self.rows),
            "with_expected_source": len(ranked),
            f"hit@{self.k}": self._mean([1.0 if r is not None and r <= self.k else 0.0 for r in ranked]),
            "mrr": self._mean([1.0 / r if r else 0.0 for r in ranked]),
            "token_f1": self._mean([r.f1 for r in self.rows if r.f1 is not None]),
            "citation_coverage": self._mean([r.coverage for r in answered if r.coverage is not None]),
            "cited_expected_source": self._mean(
                [1.0 if r.cited_expected else 0.0 for r in answered if r.cited_expected is not None]
            ),
            "refusal_rate": self._mean([1.0 if r.refused else 0.0 for r in answered]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "mode": self.mode,
            "summary": self.summary(),
            "rows": [r.to_dict() for r in self.rows],
        }


async def evaluate(
    retriever: Retriever,
    items: Sequence[QAItem],
    *,
    k: int = 3,
    mode: Mode = "hybrid",
    filters: Mapping[str, str] | None = None,
    client: AsyncOpenAI | None = None,
    model: str | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    max_tokens: int = 256,
) -> EvalReport:
    """Retrieval metrics always; answer metrics only when a `client` is given (one completion per item)."""
    report = EvalReport(k=k, mode=mode)
    for item in items:
        hits = retriever.search(item.question, k=k, mode=mode, filters=filters)
        row = EvalRow(item.question, expects_source=bool(item.sources))
        if item.sources:
            row.rank = first_relevant_rank(hits, item.sources)
        if client is not None:
            ans = await ask(
                retriever,
                item.question,
                client=client,
                model=model,
                k=k,
                mode=mode,
                filters=filters,
                min_score=min_score,
                max_tokens=max_tokens,
                temperature=0.0,
            )
            row.answer, row.refused = ans.text, ans.refused
            if not ans.refused:
                row.coverage = citation_coverage(ans.text, len(ans.sources))
                if item.sources:
                    row.cited_expected = any(
                        source_matches(h.source, e) for h in ans.cited_sources for e in item.sources
                    )
            if item.answer is not None:
                row.f1 = token_f1(_CITE_STRIP.sub("", ans.text), item.answer)
        report.rows.append(row)
    return report


_CITE_STRIP = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")
