"""`lokal rag search|ask` on the running server's warm search, when one is up and reads the same collection.

The in-process path loads MiniLM and the collection on every call (seconds); the server keeps both loaded.
The server is used only when its collection file is the one this command would open (same collection id):
a server with another LOKAL_HOME must not answer from another collection of the same name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lokal.cli import _common
from lokal.rag.gate import Gate, hit_from_dict
from lokal.rag.index import collection_id, collection_path


@dataclass(frozen=True)
class WarmResult:
    gate: Gate
    server: str  # root URL of the server that searched


def warm_search(
    collection: str,
    query: str,
    *,
    k: int,
    mode: str,
    filters: Mapping[str, str],
    min_score: float,
    max_context_chars: int,
) -> WarmResult | None:
    """The server's gated search, or None when no suitable server answers (the caller searches itself)."""
    try:
        local = collection_path(collection)
    except Exception:  # noqa: BLE001 - an invalid name: the in-process path gives the proper error
        return None
    if not local.exists():
        return None
    base = _common.root()
    if not _common.is_up(base):
        return None
    body = {
        "collection": collection,
        "query": query,
        "k": k,
        "mode": mode,
        "filters": dict(filters) or None,
        "min_score": min_score,
        "max_context_chars": max_context_chars,
    }
    data = _common.json_or_none(base, "POST", "/v1/rag/search", json=body, timeout=120)
    # An older server (no gate, no id), another home, or an error: search here, where errors are explained.
    if not isinstance(data, dict) or data.get("collection_id") != collection_id(local):
        return None
    hits = [hit_from_dict(h) for h in data["data"]]
    by_rank = {h.rank: h for h in hits}
    context = [by_rank[r] for r in data["context"] if r in by_rank]
    return WarmResult(Gate(min_score, hits, context, data["gate"]["best_similarity"]), base)
