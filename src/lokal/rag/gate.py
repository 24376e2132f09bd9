"""The one relevance gate and the one refusal, used by every front-end: `lokal rag ask`, the Chainlit chat,
and the playground's Collection mode (through POST /v1/rag/search, which applies the gate and returns the
refusal text). Two front-ends that disagree on whether a passage is relevant would answer the same question
differently, one of them from passages that have nothing to do with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lokal.rag.retrieve import Hit

# MiniLM cosine: unrelated text sits near 0-0.15, a passage that answers the question usually above 0.4.
DEFAULT_MIN_SCORE = 0.25
DEFAULT_MAX_CONTEXT_CHARS = 6000  # about 1.5k tokens: leaves room in a 4k context for the answer


@dataclass(frozen=True)
class Gate:
    """What the gate let through: `context` (best first, within the character budget) and why."""

    min_score: float
    hits: list[Hit]  # everything retrieved, with its cosine similarity
    context: list[Hit]
    best: float | None  # the highest similarity retrieved; None when nothing was

    @property
    def passed(self) -> bool:
        return bool(self.context)

    def refusal(self, collection: str) -> str | None:
        return None if self.passed else refusal(collection, self.best, self.min_score)

    def to_dict(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "best_similarity": self.best, "passed": self.passed}


def select_context(hits: Sequence[Hit], min_score: float, max_chars: int) -> list[Hit]:
    """Hits similar enough to the question, best first, within a character budget (at least one)."""
    relevant = [h for h in hits if h.dense is not None and h.dense >= min_score]
    chosen: list[Hit] = []
    used = 0
    for h in relevant:
        if chosen and used + len(h.text) > max_chars:
            break
        chosen.append(h)
        used += len(h.text)
    return chosen


def apply_gate(
    hits: Sequence[Hit], min_score: float = DEFAULT_MIN_SCORE, max_chars: int = DEFAULT_MAX_CONTEXT_CHARS
) -> Gate:
    """`hits` must carry their cosine similarity (Retriever.with_similarity)."""
    best = max((h.dense for h in hits if h.dense is not None), default=None)
    return Gate(min_score, list(hits), select_context(hits, min_score, max_chars), best)


def refusal(collection: str, best: float | None, min_score: float) -> str:
    detail = "no passage was retrieved" if best is None else f"best similarity {best:.2f} < {min_score:.2f}"
    return (
        f"I can't answer this from the collection {collection!r}: nothing relevant was found ({detail}). "
        "Try rephrasing, ingest more documents, or lower the minimum score (--min-score, or the min score "
        "setting)."
    )


def hit_from_dict(data: Mapping[str, Any]) -> Hit:
    """A hit as POST /v1/rag/search returns it (Hit.to_dict), back into a Hit."""
    return Hit(
        rank=int(data["rank"]),
        chunk_id=int(data["chunk_id"]),
        source=str(data["source"]),
        location=str(data.get("location") or ""),
        text=str(data.get("text") or ""),
        headings=tuple(data.get("headings") or ()),
        score=float(data["score"]),
        bm25=None if data.get("bm25") is None else float(data["bm25"]),
        dense=None if data.get("dense") is None else float(data["dense"]),
        metadata=dict(data.get("metadata") or {}),
    )
