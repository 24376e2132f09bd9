"""Statistics, SLO accounting, prompt and model-file loading: the arithmetic under every report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lokal.bench.config import LoadPattern, Sweep, load_models_file, parse_models
from lokal.bench.metrics import SLO, RequestRecord, Stats, summarize
from lokal.bench.prompts import BUILTIN, load_prompts
from lokal.bench.runner import schedule


def _rec(**kw: object) -> RequestRecord:
    base: dict[str, object] = {"model": "m", "prompt_id": "p", "round": 0, "ok": True}
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def test_stats_match_numpy_percentiles_and_skip_missing() -> None:
    values = [0.3, 0.1, None, 0.2, 0.9, 0.5]
    s = Stats.of(values)
    clean = np.array([0.3, 0.1, 0.2, 0.9, 0.5])
    assert s is not None and s.n == 5
    assert s.min == 0.1 and s.max == 0.9 and s.mean == pytest.approx(clean.mean())
    assert s.p50 == pytest.approx(np.percentile(clean, 50))
    assert s.p99 == pytest.approx(np.percentile(clean, 99))
    assert Stats.of([None, None]) is None


def test_tpot_and_tokens_per_second_per_request() -> None:
    r = _rec(ttft_s=0.1, e2e_s=1.0, completion_tokens=10)
    assert r.tpot_s == pytest.approx(0.1)  # (1.0 - 0.1) / 9
    assert r.output_tps == pytest.approx(10.0)
    assert _rec(ttft_s=0.1, e2e_s=1.0, completion_tokens=1).tpot_s is None


def test_summary_throughput_goodput_and_error_kinds() -> None:
    recs = [
        _rec(
            ttft_s=0.05,
            e2e_s=0.5,
            completion_tokens=10,
            prompt_tokens=4,
            itl_s=[0.05] * 9,
            prompt_token_source="usage",
            completion_token_source="usage",
        ),
        _rec(
            ttft_s=0.30,
            e2e_s=0.8,
            completion_tokens=10,
            prompt_tokens=4,
            itl_s=[0.05] * 9,
            prompt_token_source="usage",
            completion_token_source="usage",
        ),
        _rec(ok=False, error_kind="http_500", e2e_s=0.01),
    ]
    s = summarize(recs, duration_s=2.0, slo=SLO(ttft_s=0.1))
    assert (s.requests, s.success, s.errors) == (3, 2, 1)
    assert s.error_kinds == {"http_500": 1}
    assert s.output_throughput == pytest.approx(10.0)  # 20 tokens / 2 s
    assert s.request_throughput == pytest.approx(1.0)
    assert s.goodput == pytest.approx(0.5)  # only the first meets TTFT <= 100 ms
    assert s.slo_attainment == pytest.approx(1 / 3)
    assert s.token_source == "usage"
    itl = s.stat("itl_s")
    assert itl is not None and itl.n == 18


def test_estimated_token_counts_are_labelled() -> None:
    recs = [
        _rec(
            e2e_s=1,
            completion_tokens=5,
            prompt_tokens=3,
            completion_token_source="chunks",
            prompt_token_source="chars/4",
        )
    ]
    assert summarize(recs, duration_s=1).token_source == "estimated:chars/4,chunks"


def test_builtin_prompts_are_fixed_and_unique() -> None:
    assert [p.id for p in load_prompts(None)] == [p.id for p in BUILTIN]
    assert len({p.id for p in BUILTIN}) == len(BUILTIN) >= 8
    assert load_prompts("builtin")[0].text == BUILTIN[0].text


def test_prompt_file_accepts_strings_and_objects(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(
        json.dumps(["hello there", {"id": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}])
    )
    ps = load_prompts(f)
    assert [p.id for p in ps] == ["p0", "x"]
    assert ps[1].max_tokens == 7 and ps[0].text == "hello there"
    f.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]))
    with pytest.raises(ValueError, match="unique"):
        load_prompts(f)


def test_models_file_with_tags_size_and_price(tmp_path: Path) -> None:
    f = tmp_path / "models.yaml"
    f.write_text(
        "models:\n"
        "  - name: qwen2.5-0.5b\n    capabilities: [general, fast]\n    size_b: 0.5\n"
        "    price: {input: 0.1, output: 0.4}\n"
        "  - phi-4-mini\n"
    )
    entries = load_models_file(f)
    assert entries[0].tags == ["general", "fast"] and entries[0].size_b == 0.5
    assert entries[0].price is not None and entries[0].price.cost(1e6, 1e6) == pytest.approx(0.5)
    assert entries[1].name == "phi-4-mini"
    assert [e.name for e in parse_models(["a,b", str(f)])] == ["a", "b", "qwen2.5-0.5b", "phi-4-mini"]


def test_schedules_constant_and_poisson() -> None:
    const = schedule(LoadPattern("rate", rate=4.0), 5)
    assert const == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    pois = schedule(LoadPattern("poisson", rate=10.0), 2000, seed=7)
    gaps = np.diff(pois)
    assert pois[0] == 0 and np.all(gaps > 0)
    assert gaps.mean() == pytest.approx(0.1, rel=0.08)
    assert gaps.std() == pytest.approx(0.1, rel=0.1)  # exponential: std == mean
    assert schedule(LoadPattern("poisson", rate=10.0), 50, seed=7) == pois[:50]  # seeded: reproducible


def test_sweep_parse_and_validation() -> None:
    sw = Sweep.parse("concurrency:1,2,4")
    assert [lv.concurrency for lv in sw.levels] == [1, 2, 4]
    assert Sweep.parse("poisson:2,4", max_concurrency=8).levels[1].label == "poisson=4/s"
    with pytest.raises(ValueError):
        Sweep.parse("bogus:1")
    with pytest.raises(ValueError):
        LoadPattern("rate")


def test_the_local_servers_key_goes_only_to_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from lokal.bench.config import default_api_key, default_endpoint
    from lokal.config import get_settings

    monkeypatch.setenv("LOKAL_API_KEY", "local-secret")
    get_settings.cache_clear()
    try:
        assert default_api_key(None) == "local-secret"
        assert default_api_key(default_endpoint()) == "local-secret"
        assert default_api_key("http://gpu-box:8000/v1") is None
    finally:
        monkeypatch.delenv("LOKAL_API_KEY")
        get_settings.cache_clear()
