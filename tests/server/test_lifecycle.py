"""Through a real `lokal serve` on the tiny GGUF: serve options reaching the manager, real memory estimates, the
batching worker's bounded queue and cancellation on disconnect (the manager's logic: tests/runtime/test_manager.py)."""

from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.models import standard_entries, write_catalog
from tests.support.server import LokalServer


def _ps(server: LokalServer) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(server.url + "/lokal/ps").json()
    return data


def _loaded(server: LokalServer) -> list[str]:
    return [m["alias"] for m in _ps(server)["models"]]


def _chat(server: LokalServer, model: str, max_tokens: int = 2, timeout: float = 30) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    return httpx.post(server.base_url + "/chat/completions", json=body, timeout=timeout)


@pytest.fixture
def home(tiny_gguf: Path, tmp_path: Path) -> Path:
    write_catalog(tmp_path, standard_entries(tiny_gguf))
    return tmp_path


def test_serve_options_reach_the_manager_ttl_and_max_loaded(home: Path) -> None:
    """Only the wiring: the manager's TTL and LRU logic is tested in process on a moved clock
    (tests/runtime/test_manager.py, tests/server/test_echo_app.py)."""
    with LokalServer(home, args=["--ttl", "30", "--max-loaded", "1"]) as srv:
        assert _loaded(srv) == []
        assert _chat(srv, "tiny").status_code == 200
        ps = _ps(srv)
        assert [m["alias"] for m in ps["models"]] == ["tiny"]
        assert 20 < ps["models"][0]["ttl_left"] <= 30
        assert ps["models"][0]["memory_bytes"] > 0
        assert ps["server_rss_bytes"] > 0
        assert _chat(srv, "tiny-coder").status_code == 200
        assert _loaded(srv) == ["tiny-coder"]  # one at most: tiny was evicted


def test_memory_budget_evicts_and_refuses_models_too_big(home: Path, tiny_gguf: Path) -> None:
    size_mb = tiny_gguf.stat().st_size / 2**20
    assert size_mb < 1
    with LokalServer(home, args=["--memory-budget", "1"]) as srv:
        assert _chat(srv, "tiny").status_code == 200
        assert _chat(srv, "tiny-coder").status_code == 200
        assert _loaded(srv) == ["tiny-coder"]  # 1 MiB holds one tiny model and its KV cache
        r = httpx.post(srv.base_url + "/embeddings", json={"model": "all-minilm-l6-v2", "input": "x"}, timeout=60)
        assert r.status_code == 400
        assert "memory budget" in r.json()["error"]["message"]


def test_full_queue_answers_503_with_retry_after(home: Path) -> None:
    with LokalServer(home, env={"LOKAL_QUEUE_SIZE": "1"}) as srv:
        _chat(srv, "tiny")
        with cf.ThreadPoolExecutor(8) as pool:
            # a long answer keeps the slot and the queue full while the others arrive; 34 s seen beside another
            # worker, so the wait is generous: what is measured here is the 503, not the time
            results = list(pool.map(lambda _: _chat(srv, "tiny", max_tokens=1500, timeout=180), range(8)))
        codes = [r.status_code for r in results]
        assert 200 in codes
        busy = [r for r in results if r.status_code == 503]
        assert busy, codes
        assert busy[0].headers["retry-after"] == "1"
        assert busy[0].json()["error"]["code"] == "overloaded"
        assert _chat(srv, "tiny").status_code == 200


def test_client_disconnect_cancels_generation_within_a_second(home: Path) -> None:
    with LokalServer(home) as srv:
        _chat(srv, "tiny")
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 2000,
            "stream": True,
        }
        with httpx.stream("POST", srv.base_url + "/chat/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data:") for line in got)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            model = _ps(srv)["models"][0]
            if model["active"] == 0 and model["queue_depth"] == 0:
                break
            time.sleep(0.05)
        assert model["active"] == 0 and model["queue_depth"] == 0, model
        metrics = httpx.get(srv.url + "/metrics").text
        out = [line for line in metrics.splitlines() if line.startswith('lokal_tokens_total{direction="out"')]
        produced = float(out[0].rsplit(" ", 1)[1])
        assert produced < 1500  # stopped long before max_tokens (2 tokens came from the warm-up call)
