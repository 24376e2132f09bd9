"""Each replica of a remote model's pool is visible: /lokal/ps, /metrics and `lokal model ps` (a real `lokal serve`
in front of two scripted upstreams and a closed port)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from lokal.cli.main import app as lokal_app
from tests.support.models import write_catalog
from tests.support.scripted import Script, ScriptedServer
from tests.support.server import LokalServer, free_port


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LokalServer, list[str]]]:
    home = tmp_path_factory.mktemp("pool-home")
    with ScriptedServer(Script(tokens=4)) as a, ScriptedServer(Script(ttft_s=0.02, tokens=4)) as b:
        urls = [a.base_url, b.base_url, f"http://127.0.0.1:{free_port()}/v1"]
        variant = {
            "id": "pool-remote:1",
            "engine": "remote",
            "base_url": urls[0],
            "replicas": urls[1:],
            "upstream_model": "m",
            "max_concurrency": 8,
            "health_check_s": 0,  # the dead replica is found by the requests themselves, deterministically
            "eject_after": 1,
            "eject_cooldown_s": 60,
        }
        write_catalog(home, [{"alias": "pool", "variants": [variant]}])
        with LokalServer(home, args=["--model", "pool"]) as server:
            for _ in range(6):
                r = httpx.post(
                    server.base_url + "/chat/completions",
                    json={"model": "pool", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                    timeout=30,
                )
                assert r.status_code == 200 and "data: [DONE]" in r.text and '"error"' not in r.text
            yield server, urls


def test_ps_lists_every_replica(front: tuple[LokalServer, list[str]]) -> None:
    server, urls = front
    (model,) = httpx.get(server.url + "/lokal/ps", timeout=10).json()["models"]
    rows = {r["url"]: r for r in model["replicas"]}
    assert list(rows) == urls
    assert rows[urls[0]]["healthy"] and rows[urls[1]]["healthy"] and not rows[urls[2]]["healthy"]
    assert rows[urls[2]]["failures"] == 1 and rows[urls[2]]["ejected_for_s"] > 0
    assert rows[urls[0]]["requests"] + rows[urls[1]]["requests"] == 6
    assert all(rows[u]["latency_ewma_ms"] > 0 for u in urls[:2])
    assert all(r["in_flight"] == 0 for r in rows.values())


def test_metrics_have_a_series_per_replica(front: tuple[LokalServer, list[str]]) -> None:
    server, urls = front
    text = httpx.get(server.url + "/metrics", timeout=10).text

    def value(name: str, url: str) -> float:
        m = re.search(rf'^{name}\{{model="pool",replica="{re.escape(url)}"\}} (\S+)$', text, re.M)
        assert m, f"{name} for {url} missing"
        return float(m.group(1))

    assert value("lokal_upstream_healthy", urls[0]) == 1 and value("lokal_upstream_healthy", urls[2]) == 0
    assert value("lokal_upstream_failures_total", urls[2]) == 1
    assert value("lokal_upstream_in_flight", urls[1]) == 0
    assert value("lokal_upstream_latency_ewma_seconds", urls[1]) > 0.015  # its scripted TTFT is 20 ms
    assert value("lokal_upstream_requests_total", urls[0]) + value("lokal_upstream_requests_total", urls[1]) == 6


def test_lokal_model_ps_shows_the_replicas(front: tuple[LokalServer, list[str]]) -> None:
    server, urls = front
    res = CliRunner().invoke(lokal_app, ["model", "ps", "--base-url", server.url], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "upstream replicas" in res.output
    lines = {u: next(line for line in res.output.splitlines() if u in line) for u in urls}
    assert " yes " in lines[urls[0]] and "no (ejected" in lines[urls[2]]


def test_replica_cells_read_odd_rows_as_dashes() -> None:
    from lokal.cli.ps_rows import replica_cells

    model = {"alias": "p", "replicas": [{"url": "u", "healthy": "?", "latency_ewma_ms": None}, "junk", 3]}
    assert replica_cells(model) == [("p", "u", "-", "-", "-", "-", "-")]
    assert replica_cells({"alias": "p", "replicas": {"not": "a list"}}) == []
