"""The bench's numbers against a server whose timing is scripted: TTFT, ITL, tokens, decomposition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lokal.bench.runner import run_bench
from tests.bench.conftest import Factory
from tests.bench.helpers import config, prompts
from tests.support.scripted import Script, ScriptedServer

pytestmark = pytest.mark.serial  # TTFT and ITL within milliseconds of the script: run alone

TTFT, ITL, TOKENS = 0.050, 0.010, 12
MS = 1e-3


def _script_misses(srv: ScriptedServer) -> list[str]:
    """Where one run's statistics miss the script; empty when all hold.

    "base" answers with no scripted wait, measured in the same run: its TTFT is this box's own cost of a
    request (loopback, parsing, thread wake-ups), which a busy CI neighbour can raise to 10 ms. The bench must
    see the script plus at most that cost; never less than the script (it would have measured from too late).
    """
    res = run_bench(config(srv, "base", "m", prompts=prompts(6), rounds=3, warmup_rounds=1))
    base, m = res.models
    assert base.status == "ok" and m.status == "ok"
    sm, sb = m.steps[0].summary, base.steps[0].summary
    ttft, itl, e2e = sm.stat("ttft_s"), sm.stat("itl_s"), sm.stat("e2e_s")
    cost = sb.stat("ttft_s")
    assert ttft is not None and itl is not None and e2e is not None and cost is not None
    assert ttft.n == 18 and itl.n == 18 * (TOKENS - 1)
    assert ttft.min >= TTFT  # never less than the script: the server waits at least that long
    expected_e2e = TTFT + (TOKENS - 1) * ITL
    over = cost.p50
    checks = {
        "request cost": over <= 25 * MS,  # a client that dawdles before sending fails here
        "ttft p50": TTFT <= ttft.p50 <= TTFT + over + 6 * MS,
        "ttft p95": TTFT <= ttft.p95 <= TTFT + over + 15 * MS,
        "itl p50": abs(itl.p50 - ITL) <= 2 * MS,
        "itl p95": abs(itl.p95 - ITL) <= 5 * MS,
        "itl mean": abs(itl.mean - ITL) <= 1 * MS,  # the server keeps absolute deadlines: no drift
        "e2e p50": expected_e2e <= e2e.p50 <= expected_e2e + over + 8 * MS,
    }
    return [
        f"{k} (request cost {over / MS:.1f}, ttft {ttft.p50 / MS:.1f}/{ttft.p95 / MS:.1f}, "
        f"itl {itl.p50 / MS:.1f}/{itl.p95 / MS:.1f} ms)"
        for k, ok in checks.items()
        if not ok
    ]


def test_ttft_and_itl_match_the_script_within_a_few_ms(scripted: Factory) -> None:
    script = Script(ttft_s=TTFT, itl_s=ITL, tokens=TOKENS)
    srv = scripted(scripts={"m": script, "base": Script(ttft_s=0.0, itl_s=ITL, tokens=TOKENS)})
    # This box has 2 cores shared with other jobs and the server shares our GIL, so a burst of outside load
    # can make the *server* late. A wrong measurement fails every attempt; a noisy neighbour does not.
    # (test_per_request_timing_matches_what_the_server_did checks accuracy without that noise.)
    misses: list[str] = []
    for _ in range(3):
        misses = _script_misses(srv)
        if not misses:
            break
    assert not misses, misses


def test_per_request_timing_matches_what_the_server_did(scripted: Factory) -> None:
    """Against the server's own write timestamps (same clock), request by request: jitter included."""
    srv = scripted(Script(ttft_s=0.03, itl_s=0.006, tokens=10))
    res = run_bench(config(srv, "m", prompts=prompts(6), rounds=2))
    step = res.models[0].steps[0]
    records = step.records
    assert step.t0_perf_s is not None
    assert len(records) == len(srv.stats.writes) == 12  # sequential: arrival order is send order
    # Truth: the server wrote token 0 at w[0]; the request left the client at t0 + start_s.
    ttft_dev = [
        r.ttft_s - (w[0] - (step.t0_perf_s + r.start_s))
        for r, w in zip(records, srv.stats.writes, strict=True)
        if r.ttft_s is not None
    ]
    itl_dev = [
        abs(c - s)
        for r, w in zip(records, srv.stats.writes, strict=True)
        for c, s in zip(r.itl_s, np.diff(w), strict=True)
    ]
    assert len(ttft_dev) == 12 and len(itl_dev) == 12 * 9
    assert min(ttft_dev) > 0  # the client can only see a token after the server wrote it
    assert np.percentile(ttft_dev, 50) <= 3 * MS
    assert np.percentile(ttft_dev, 95) <= 8 * MS
    assert np.percentile(itl_dev, 50) <= 1 * MS
    assert np.percentile(itl_dev, 95) <= 6 * MS


def test_token_counts_are_exact_from_usage(scripted: Factory) -> None:
    srv = scripted(Script(tokens=TOKENS))
    res = run_bench(config(srv, "m", prompts=prompts(4), max_tokens=100))
    records = res.models[0].records
    assert [r.completion_tokens for r in records] == [TOKENS] * 4
    assert [r.prompt_tokens for r in records] == [3, 4, 5, 6]  # word counts of prompts(4)
    assert {r.completion_token_source for r in records} == {"usage"}
    body = srv.stats.bodies[0]
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0 and body["seed"] == 1234  # deterministic mode


def test_max_tokens_caps_the_output(scripted: Factory) -> None:
    srv = scripted(Script(tokens=50))
    res = run_bench(config(srv, "m", max_tokens=7))
    assert {r.completion_tokens for r in res.models[0].records} == {7}


def test_without_usage_counts_chunks_and_marks_the_estimate(scripted: Factory) -> None:
    srv = scripted(Script(tokens=9, usage=False))
    res = run_bench(config(srv, "m"))
    step = res.models[0].steps[0]
    assert {r.completion_tokens for r in step.records} == {9}
    assert {r.completion_token_source for r in step.records} == {"chunks"}
    assert step.summary.token_source.startswith("estimated:")


def test_without_usage_a_tokenizer_counts_exactly(scripted: Factory, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # one token per word, as the scripted server counts
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    srv = scripted(Script(tokens=6, usage=False))
    res = run_bench(config(srv, "m", stream=False, tokenizer=str(path)))
    records = res.models[0].records
    assert [r.prompt_tokens for r in records] == [3, 4, 5, 6]
    assert {r.completion_tokens for r in records} == {6}
    assert {r.completion_token_source for r in records} == {"tokenizer"}


def test_non_streaming_measures_end_to_end_only(scripted: Factory) -> None:
    srv = scripted(Script(ttft_s=0.02, itl_s=0.005, tokens=5))
    res = run_bench(config(srv, "m", stream=False))
    sm = res.models[0].steps[0].summary
    e2e = sm.stat("e2e_s")
    assert sm.stat("ttft_s") is None and sm.stat("itl_s") is None
    assert e2e is not None and e2e.min >= 0.04  # the script: 20 ms + 4 x 5 ms
    step = res.models[0].steps[0]
    assert step.t0_perf_s is not None
    # Against what the server did: its last token was produced at w[-1]; the body follows at once.
    dev = [
        r.e2e_s - (w[-1] - (step.t0_perf_s + r.start_s))
        for r, w in zip(step.records, srv.stats.writes, strict=True)
        if r.e2e_s is not None
    ]
    # 8 ms: the body is JSON-parsed after the last write; on a loaded 2-core machine 4 ms flaked (4.6 ms seen)
    assert min(dev) > 0 and float(np.median(dev)) < 8 * MS
    assert "stream_options" not in srv.stats.bodies[0]
    assert {r.completion_tokens for r in res.models[0].records} == {5}


def test_latency_decomposition_adds_up(scripted: Factory) -> None:
    srv = scripted(Script(ttft_s=0.03, itl_s=0.005, tokens=6))
    res = run_bench(config(srv, "m"))
    for r in res.models[0].records:
        parts = [r.phase_prepare_s, r.phase_send_s, r.phase_first_token_s, r.phase_completion_s]
        assert all(p is not None and p >= 0 for p in parts)
        assert sum(p for p in parts if p is not None) == pytest.approx(r.e2e_s, abs=1e-6)
        head = [r.phase_prepare_s, r.phase_send_s, r.phase_first_token_s]
        assert r.ttft_s == pytest.approx(sum(p for p in head if p is not None), abs=1e-6)
        assert r.ttft_s is not None and r.ttft_s >= 0.03
        assert r.e2e_s is not None and r.e2e_s >= 0.03 + 5 * 0.005  # the script's total: none is faster


def test_logprobs_are_averaged_when_asked(scripted: Factory) -> None:
    srv = scripted(Script(tokens=4, logprob=-0.75))
    res = run_bench(config(srv, "m", logprobs=True))
    assert {r.mean_logprob for r in res.models[0].records} == {-0.75}
    assert srv.stats.bodies[0]["logprobs"] is True
