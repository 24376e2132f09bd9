"""The sentence a comparison ends in: which way it went, by how much, and whether hybrid is worth it.

The rule is stated so a reader can disagree with it: hybrid is worth it against the large model when it is
faster and no more expensive, with quality (when scored) within QUALITY_MARGIN of the large model's; it is not
worth it when it is slower and no cheaper, or its quality falls further behind; anything else is a trade-off.
"""

from __future__ import annotations

from lokal.bench.compare import CompareResult, Role

QUALITY_MARGIN = 0.5  # rubric points (1-5 scale) that count as "as good"


def _latency(result: CompareResult, role: Role) -> float | None:
    if role == "hybrid":
        return result.hybrid_latency().get("blended_s")
    m = result.model(role)
    step = m.main_step if m is not None else None
    st = step.summary.stat("e2e_s") if step else None
    return st.mean if st else None


def _cost(result: CompareResult, role: Role) -> tuple[float | None, str]:
    """Per-request cost and what it is: the cloud price when every role has one, else local device cost."""
    views = [result.costs.get(r) for r in _roles(result)]
    cloud = all(v is not None and v.cloud_usd is not None for v in views)
    view = result.costs.get(role)
    if view is None:
        return None, ""
    if cloud:
        return view.per_request(view.cloud_usd), "cloud price"
    local = view.per_request(view.local_usd)
    return (local, "local device cost") if local else (None, "")


def _roles(result: CompareResult) -> tuple[Role, ...]:
    return ("small", "large", "hybrid") if result.hybrid else ("small", "large")


def _quality(result: CompareResult, role: Role) -> float | None:
    vals = [v for v in result.quality()[role].values() if v is not None]
    return sum(vals) / len(vals) if vals else None


def _pct(a: float, b: float) -> float:
    return (a - b) / b * 100 if b else 0.0


def _speed(name: str, a: float | None, b: float | None, other: str) -> str:
    if a is None or b is None:
        return f"{name}'s latency is unknown"
    change = _pct(a, b)
    if abs(change) < 1:
        return f"{name} was as fast as {other} ({a * 1000:.0f} ms mean)"
    word = "slower" if change > 0 else "faster"
    return f"{name} was {abs(change):.0f}% {word} than {other} ({a * 1000:.0f} vs {b * 1000:.0f} ms mean)"


def _price(a: float | None, b: float | None, what: str) -> str:
    if a is None or b is None or not b:
        return "cost not compared (give --large-price/--small-price or --device-cost-per-hour)"
    change = _pct(a, b)
    if abs(change) < 1:
        return f"the same {what}"
    return f"{abs(change):.0f}% {'cheaper' if change < 0 else 'dearer'} ({what})"


def conclusion(result: CompareResult) -> str:
    small, large = result.small.label, result.large.label
    if result.small.status == "failed" or result.large.status == "failed":
        failed = [m.label for m in (result.small, result.large) if m.status == "failed"]
        return f"No conclusion: {' and '.join(failed)} failed."
    ls, ll = _latency(result, "small"), _latency(result, "large")
    (cs, what), (cl, _) = _cost(result, "small"), _cost(result, "large")
    parts = [f"{_speed(small, ls, ll, large)}, {_price(cs, cl, what)}"]
    qs, ql = _quality(result, "small"), _quality(result, "large")
    if qs is not None and ql is not None:
        parts.append(f"quality {qs:.1f} vs {ql:.1f} of 5")
    sentence = "; ".join(parts) + "."
    if not result.hybrid:
        return sentence
    lh = _latency(result, "hybrid")
    ch, _ = _cost(result, "hybrid")
    qh = _quality(result, "hybrid")
    refined = sum(h.refined for h in result.hybrid)
    faster = lh is not None and ll is not None and lh < ll
    cheaper = ch is not None and cl is not None and ch <= cl
    as_good = qh is None or ql is None or qh >= ql - QUALITY_MARGIN
    if faster and cheaper and as_good:
        judgement = "worth it"
    elif (not faster and not cheaper) or not as_good:
        judgement = "not worth it"
    else:
        judgement = "a trade-off"
    hybrid = (
        f"Hybrid (refining {refined} of {len(result.hybrid)}): {_speed('it', lh, ll, large)}, "
        f"{_price(ch, cl, what)}"
        + (f", quality {qh:.1f} vs {ql:.1f}" if qh is not None and ql is not None else "")
        + f": {judgement} here."
    )
    return f"{sentence} {hybrid}"


def synthetic_note(result: CompareResult) -> str | None:
    names = [m.name for m in (result.small, result.large) if m.synthetic]
    if not names:
        return None
    return (
        f"SYNTHETIC: {' and '.join(names)} {'has' if len(names) == 1 else 'have'} random weights: latency and "
        "memory are real for the shape, but the outputs and any quality score are noise."
    )
