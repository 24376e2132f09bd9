"""Load patterns against the scripted server: concurrency reached, rates kept, sweeps, bounds, failures."""

from __future__ import annotations

import numpy as np
import pytest

from lokal.bench.config import LoadPattern, Sweep
from lokal.bench.metrics import SLO
from lokal.bench.runner import run_bench
from tests.bench.conftest import Factory
from tests.bench.helpers import config, prompts
from tests.support.scripted import Script

MS = 1e-3


# Every check here is a schedule or a latency against a bound of milliseconds (requests sent within 4 ms of
# their time, a 50 ms TTFT against an 80 ms SLO): run alone, where a busy neighbour cannot move them.
pytestmark = pytest.mark.serial

@pytest.mark.parametrize("n", [1, 4])
def test_concurrency_is_reached_and_never_exceeded(scripted: Factory, n: int) -> None:
    srv = scripted(Script(ttft_s=0.04, itl_s=0.002, tokens=4))
    res = run_bench(config(srv, "m", prompts=prompts(8), rounds=2, pattern=LoadPattern("concurrency", concurrency=n)))
    step = res.models[0].steps[0]
    assert step.summary.success == 16
    assert srv.stats.max_in_flight == n  # what the server saw
    assert step.summary.max_in_flight == n  # what the client reports
    if n > 1:
        assert step.summary.mean_concurrency > n - 1  # kept busy, not just briefly touched


def test_constant_rate_sends_on_schedule(scripted: Factory) -> None:
    srv = scripted(Script(tokens=3))
    rate = 40.0
    res = run_bench(config(srv, "m", prompts=prompts(8), rounds=3, pattern=LoadPattern("rate", rate=rate)))
    step = res.models[0].steps[0]
    assert step.schedule_s == pytest.approx([i / rate for i in range(24)])
    sent = np.array([r.start_s for r in step.records])
    assert np.median(np.abs(sent - np.array(step.schedule_s))) < 4 * MS  # each request left on time
    # What the server saw: 24 requests over 23 gaps of 25 ms (its own scheduling adds jitter, not drift).
    arrivals = np.array(srv.stats.arrivals)
    assert len(arrivals) == 24
    assert arrivals[-1] - arrivals[0] == pytest.approx(23 / rate, abs=30 * MS)
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) == pytest.approx(rate, rel=0.06)


def test_poisson_rate_follows_its_seeded_schedule(scripted: Factory) -> None:
    srv = scripted(Script(tokens=3))
    res = run_bench(config(srv, "m", prompts=prompts(8), rounds=3, pattern=LoadPattern("poisson", rate=50.0)))
    step = res.models[0].steps[0]
    assert step.schedule_s is not None and len(step.schedule_s) == 24
    planned = np.array(step.schedule_s)
    gaps = np.diff(planned)
    assert gaps.std() > 0.3 * gaps.mean()  # exponential gaps, not a metronome
    sent = np.array([r.start_s for r in step.records])
    assert np.median(np.abs(sent - planned)) < 4 * MS
    arrivals = np.array(srv.stats.arrivals)
    assert len(arrivals) == 24
    assert arrivals[-1] - arrivals[0] == pytest.approx(planned[-1], abs=30 * MS)


def test_open_loop_ignores_slow_responses_but_honours_the_cap(scripted: Factory) -> None:
    srv = scripted(Script(ttft_s=0.15, tokens=2))
    res = run_bench(config(srv, "m", prompts=prompts(8), rounds=1, pattern=LoadPattern("rate", rate=100.0)))
    assert srv.stats.max_in_flight >= 6  # 8 sent within 70 ms, each takes 150 ms
    assert res.models[0].steps[0].summary.success == 8
    srv.stats.reset()
    run_bench(config(srv, "m", prompts=prompts(8), pattern=LoadPattern("rate", rate=100.0, max_concurrency=2)))
    assert srv.stats.max_in_flight == 2


def test_sweep_finds_the_highest_load_whose_slo_holds(scripted: Factory) -> None:
    # The server runs 2 requests at a time; a third waits, so its TTFT doubles past the 80 ms SLO.
    srv = scripted(Script(ttft_s=0.05, tokens=2), max_parallel=2)
    res = run_bench(
        config(
            srv,
            "m",
            prompts=prompts(8),
            rounds=1,
            sweep=Sweep.parse("concurrency:1,2,4,8"),
            slo=SLO(ttft_s=0.08, attainment=0.9),
        )
    )
    m = res.models[0]
    labels = [s.pattern.label for s in m.steps]
    assert labels == ["concurrency=1", "concurrency=2", "concurrency=4"]  # stopped after the first miss
    assert [s.slo_ok for s in m.steps] == [True, True, False]
    assert m.best_step == 1
    best = m.steps[1].summary
    assert best.goodput is not None and best.goodput == pytest.approx(best.request_throughput)
    assert m.steps[2].summary.slo_attainment is not None and m.steps[2].summary.slo_attainment < 0.9


def test_duration_bound_stops_sending(scripted: Factory) -> None:
    srv = scripted(Script(ttft_s=0.1, tokens=2))
    res = run_bench(config(srv, "m", prompts=prompts(8), rounds=4, max_duration_s=0.35))
    step = res.models[0].steps[0]
    assert step.truncated
    assert 2 <= len(step.records) <= 5 < 32
    assert step.summary.duration_s < 1.0


def test_a_failing_model_is_recorded_and_the_run_goes_on(scripted: Factory) -> None:
    srv = scripted(scripts={"good": Script(tokens=3), "broken": Script(status=500)})
    res = run_bench(config(srv, "missing", "broken", "good", warmup_rounds=1))
    missing, broken, good = res.models
    assert missing.status == "failed" and "404" in (missing.error or "")
    assert srv.stats.models.count("missing") == 1  # 404 is final: no point sending the rest
    assert broken.status == "failed" and "500" in (broken.error or "")
    assert good.status == "ok" and good.steps[0].summary.success == 4
    assert not res.all_failed and res.any_failed


def test_all_failed_when_nothing_answers(scripted: Factory) -> None:
    srv = scripted(scripts={})
    res = run_bench(config(srv, "a", "b"))
    assert res.all_failed
    srv.stop()
    res = run_bench(config(srv, "a"))  # nobody listening now
    assert res.all_failed
    assert "connect" in (res.models[0].error or "")


def test_server_figures_when_the_endpoint_is_lokal_like(scripted: Factory) -> None:
    with_ps = scripted(scripts={"m": Script(tokens=2, memory_bytes=5 * 2**20, load_seconds=1.5)}, serve_ps=True)
    res = run_bench(config(with_ps, "m"))
    server = res.models[0].server
    assert server is not None and server.memory_bytes == 5 * 2**20 and server.load_seconds == 1.5
    assert server.server_rss_bytes == 123_456_789
    plain = scripted(scripts={"m": Script(tokens=2)})
    assert run_bench(config(plain, "m")).models[0].server is None  # other endpoints: absent, not an error


def test_warmup_is_not_counted_and_gives_a_cold_start(scripted: Factory) -> None:
    srv = scripted(Script(tokens=2))
    res = run_bench(config(srv, "m", prompts=prompts(3), rounds=2, warmup_rounds=1))
    m = res.models[0]
    assert srv.stats.requests == 9 and len(m.warmup) == 3 and len(m.records) == 6
    assert m.cold_start_s is not None and m.cold_start_s > 0
    assert set(m.samples) == {"p0", "p1", "p2"} and m.samples["p0"].startswith("w0")
