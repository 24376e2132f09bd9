"""SLM vs LLM, the hybrid draft->refine policy, rubric scores (judge and human) and cost emulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lokal.bench.compare import (
    CompareConfig,
    HybridPolicy,
    annotation_template,
    parse_scores,
    run_compare,
)
from lokal.bench.compare_report import rich_tables, to_markdown, write_compare
from lokal.bench.config import ModelEntry, Price
from lokal.bench.costs import LocalCost, PriceTable, cost_of
from lokal.bench.metrics import RequestRecord
from lokal.bench.prompts import Prompt
from tests.bench.conftest import Factory
from tests.support.scripted import Script

PROMPTS = [
    Prompt("short", ({"role": "user", "content": "Name a colour."},)),
    Prompt("medical", ({"role": "user", "content": "What dose of ibuprofen is safe? medical question"},)),
    Prompt("long", ({"role": "user", "content": "Summarise: " + "lorem ipsum " * 40},)),
]


def _draft(ok: bool = True, logprob: float | None = None) -> RequestRecord:
    return RequestRecord(model="s", prompt_id="p", round=0, ok=ok, e2e_s=0.1, mean_logprob=logprob)


def test_policy_rules() -> None:
    p = HybridPolicy(prompt_chars_over=100, draft_chars_under=5, topics=("medical",), min_confidence=-1.0)
    short, medical, long = PROMPTS
    assert p.decide(short, _draft(logprob=-0.2), "Blue is a colour.") is None
    assert p.decide(medical, _draft(logprob=-0.2), "Take 200 mg.") == "topic:medical"
    assert p.decide(long, _draft(logprob=-0.2), "A summary.") == "prompt over 100 chars"
    assert p.decide(short, _draft(logprob=-0.2), "ok") == "draft under 5 chars"
    assert (p.decide(short, _draft(logprob=-2.5), "Blue is a colour.") or "").startswith("low confidence")
    assert p.decide(short, _draft(ok=False), "") == "draft failed"
    assert p.decide(short, _draft(logprob=None), "Blue is a colour.") is None
    cautious = HybridPolicy(min_confidence=-1.0, refine_unknown_confidence=True)
    assert cautious.decide(short, _draft(logprob=None), "Blue.") == "confidence unknown"
    refine = p.refine_prompt(short, "Blue.")
    assert [m["role"] for m in refine.messages] == ["user", "assistant", "user"]


def test_parse_scores_from_judge_replies() -> None:
    s = parse_scores('Sure! {"coherence": 4, "Factuality": 5, "concision": 2} hope that helps')
    assert (s.coherence, s.factuality, s.concision) == (4, 5, 2) and s.mean == pytest.approx(11 / 3)
    s = parse_scores("coherence: 3\nfactuality - 4\nconcision=9")
    assert (s.coherence, s.factuality, s.concision) == (3, 4, None)  # 9 is off the 1-5 scale
    assert parse_scores("random noise").mean is None


def test_costs_cloud_and_local() -> None:
    recs = [
        RequestRecord(model="m", prompt_id="p", round=0, ok=True, e2e_s=2.0, prompt_tokens=1000, completion_tokens=500)
    ] * 2
    view = cost_of(recs, Price(input_per_1m=1.0, output_per_1m=4.0), LocalCost(3.6, watts=100, kwh_price=0.5))
    assert view.cloud_usd == pytest.approx((2000 * 1.0 + 1000 * 4.0) / 1e6)
    assert view.device_seconds == 4.0
    assert view.energy_kwh == pytest.approx(100 * 4 / 3.6e6)
    energy = 100 * 4 / 3.6e6
    assert view.local_usd == pytest.approx(3.6 * 4 / 3600 + energy * 0.5)
    assert view.to_dict()["cloud_usd_per_1k_requests"] == pytest.approx(0.006 / 2 * 1000)


def test_price_table_file(tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text("prices:\n  big: {input: 2.5, output: 10}\n  '*': {input: 0.1, output: 0.4}\n")
    table = PriceTable.load(f)
    big, other = table.get("big"), table.get("anything")
    assert big is not None and big.output_per_1m == 10
    assert other is not None and other.input_per_1m == 0.1


def _servers(scripted: Factory) -> str:
    srv = scripted(
        scripts={
            "small": Script(ttft_s=0.005, itl_s=0.001, tokens=8),
            "large": Script(ttft_s=0.03, itl_s=0.004, tokens=20),
            "judge": Script(reply='{"coherence": 4, "factuality": 3, "concision": 5}'),
        },
        serve_ps=True,
    )
    return srv.base_url


def test_compare_side_by_side_with_hybrid_judge_and_costs(scripted: Factory, tmp_path: Path) -> None:
    cfg = CompareConfig(
        small=ModelEntry(name="small", price=Price(input_per_1m=0.1, output_per_1m=0.4)),
        large=ModelEntry(name="large", price=Price(input_per_1m=2.5, output_per_1m=10.0)),
        endpoint=_servers(scripted),
        prompts=PROMPTS,
        max_tokens=64,
        hybrid=HybridPolicy(topics=("medical",), prompt_chars_over=200),
        judge=ModelEntry(name="judge"),
        local=LocalCost(device_cost_per_hour=1.0),
    )
    res = run_compare(cfg)
    assert res.small.status == res.large.status == "ok"
    assert res.small.server is not None and res.small.server.memory_bytes
    row = res.rows[0]
    assert row.records["small"].completion_tokens == 8 and row.records["large"].completion_tokens == 20
    assert row.outputs["small"].startswith("w0") and row.outputs["hybrid"] == row.outputs["small"]

    assert res.hybrid is not None
    decisions = {h.prompt_id: (h.refined, h.reason) for h in res.hybrid}
    assert decisions == {
        "short": (False, None),
        "medical": (True, "topic:medical"),
        "long": (True, "prompt over 200 chars"),
    }
    refined = [h for h in res.hybrid if h.refined]
    assert all(h.refine_s is not None and h.refine_s >= 0.03 + 19 * 0.004 for h in refined)
    assert res.refine_rate == pytest.approx(2 / 3)
    lat = res.hybrid_latency()
    assert lat["blended_s"] == pytest.approx(sum(h.total_s or 0 for h in res.hybrid) / 3)

    q = res.quality()
    assert q["small"] == {"coherence": 4.0, "factuality": 3.0, "concision": 5.0}
    assert q["hybrid"]["coherence"] == 4.0

    small_cost, large_cost, hybrid_cost = res.costs["small"], res.costs["large"], res.costs["hybrid"]
    assert small_cost.cloud_usd is not None and large_cost.cloud_usd is not None and hybrid_cost.cloud_usd
    per = {k: v.per_request(v.cloud_usd) or 0 for k, v in res.costs.items()}
    assert per["small"] < per["hybrid"] < per["large"] + per["small"]
    assert hybrid_cost.requests == 3

    data = json.loads(write_compare(res, tmp_path / "c.json").read_text())
    assert data["hybrid"]["refine_rate"] == pytest.approx(2 / 3) and len(data["rows"]) == 3
    md = to_markdown(res)
    assert "topic:medical" in md and "| hybrid |" in md
    assert rich_tables(res).renderables


def test_hand_annotations_override_the_judge(scripted: Factory, tmp_path: Path) -> None:
    base = _servers(scripted)
    cfg = CompareConfig(
        small=ModelEntry(name="small"),
        large=ModelEntry(name="large"),
        endpoint=base,
        prompts=PROMPTS[:2],
        warmup_rounds=0,
        hybrid=None,
    )
    first = run_compare(cfg)
    template = annotation_template(first)
    assert {(t["prompt_id"], t["model"]) for t in template} == {
        ("short", "small"),
        ("short", "large"),
        ("medical", "small"),
        ("medical", "large"),
    }
    template[0].update(coherence=2, factuality=1, concision=5, note="wrong colour")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(template))
    cfg.annotations = path
    again = run_compare(cfg)
    s = again.rows[0].scores["small"]
    assert (s.coherence, s.factuality, s.concision, s.source, s.note) == (2, 1, 5, "human", "wrong colour")
    assert "large" not in again.rows[0].scores  # unfilled entries are skipped
    assert again.quality()["small"]["factuality"] == 1.0
