"""The router against real HTTP servers on 127.0.0.1 that answer, fail with 500/429, or stall."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lokal.errors import ModelNotFound
from lokal.router.cache import ResponseCache
from lokal.router.catalog import CatalogStore
from lokal.router.engine import IntentEngine
from lokal.router.router import NoRouteAvailable, Router
from lokal.router.session import RouterSession
from lokal.router.trace import TRACE_FIELDS, TraceWriter, read_trace
from tests.router.fakes import FakeOpenAI

MakeFake = Callable[..., FakeOpenAI]
WriteCatalog = Callable[[Path, dict[str, Any]], Path]
CODE = [{"role": "user", "content": "Write a Python function that reverses a list"}]
CHAT = [{"role": "user", "content": "What is a nice name for a cat?"}]


def catalog(remote: FakeOpenAI | None = None, **policy: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "models": {
            "small": {"capabilities": ["general", "summarize", "fast"], "priority": 1, "fallbacks": ["backup"]},
            "coder": {"capabilities": ["code", "refactor"], "priority": 1, "fallbacks": ["small"]},
            "backup": {"capabilities": ["general", "code"], "priority": 4},
        },
        "policy": {"detector": "rules", "backoff_s": 0.05, "cooldown_s": 60, **policy},
    }
    if remote is not None:
        data["endpoints"] = {"gpu": {"base_url": remote.base_url, "api_key_env": "GPU_TEST_KEY"}}
        data["models"]["big"] = {
            "capabilities": ["general", "reasoning", "code"],
            "priority": 5,
            "tier": 3,
            "endpoint": "gpu",
            "upstream_model": "big-70b",
            "cost_per_1m": 3.0,
        }
    return data


class Harness:
    def __init__(self, path: Path, local: FakeOpenAI, trace: Path) -> None:
        self.sleeps: list[float] = []
        self.trace_path = trace
        self.router = Router(
            CatalogStore(path),
            local_base_url=local.base_url,
            intents=IntentEngine(None),
            trace=TraceWriter(trace),
            cache=ResponseCache(),
        )

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.session = RouterSession(self.router, sleep=sleep)

    def events(self) -> list[dict[str, Any]]:
        return read_trace(self.trace_path)


@pytest.fixture
def setup(
    tmp_path: Path, fake_server: MakeFake, write_catalog: WriteCatalog
) -> Iterator[Callable[..., tuple[Harness, FakeOpenAI]]]:
    made: list[Harness] = []

    def make(data: dict[str, Any] | None = None, **local_kwargs: Any) -> tuple[Harness, FakeOpenAI]:
        local = fake_server(**local_kwargs)
        path = write_catalog(tmp_path / "router.yaml", data if data is not None else catalog())
        made.append(Harness(path, local, tmp_path / "trace.jsonl"))
        return made[-1], local

    yield make
    for h in made:
        h.session.close()


def test_code_goes_to_the_coder_and_chat_to_the_generalist(setup: Any) -> None:
    h, local = setup()
    res = h.session.complete(CODE)
    assert res.model == "coder" and res.content.startswith("[coder]")
    assert res.decision.intent == "code" and not res.fallback_used
    assert h.session.complete(CHAT).model == "small"
    assert local.models_called() == ["coder", "small"]


def test_remote_endpoint_gets_its_upstream_name_and_key(
    setup: Any, fake_server: MakeFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = fake_server(api_key="s3cret")
    monkeypatch.setenv("GPU_TEST_KEY", "s3cret")
    h, local = setup(catalog(remote, escalation={"topics": [r"\bsecurity\b"]}))
    res = h.session.complete([{"role": "user", "content": "Review this code for security holes"}])
    assert res.decision.escalated and "flagged topic 'security'" in res.decision.reason
    assert res.model == "big" and remote.models_called() == ["big-70b"] and local.calls == []
    assert res.cost_usd == pytest.approx(3.0 * (res.prompt_tokens + res.completion_tokens) / 1e6)


def test_a_500_is_retried_with_backoff_then_the_fallback_answers_and_the_model_cools_down(setup: Any) -> None:
    h, local = setup(behaviour={"coder": "fail"})
    res = h.session.complete(CODE)
    assert res.model == "small" and res.fallback_used  # coder's declared fallback
    assert local.models_called() == ["coder", "coder", "small"]  # retries: 1
    assert h.sleeps == [pytest.approx(0.05)]
    assert [a["error"] is None for a in res.attempts] == [False, False, True]
    assert "HTTP 500" in res.attempts[0]["error"]
    # Cooling down: the next code request goes straight down coder's fallback chain instead of paying again.
    again = h.session.complete([{"role": "user", "content": "Write a bash script that counts files"}])
    assert again.model == "small" and local.models_called()[3:] == ["small"] and not again.fallback_used
    assert "cooling down: coder" in again.decision.reason
    assert again.decision.candidates[-1].model == "coder"  # still a last resort
    ev = h.events()[0]
    assert ev["fallback_used"] is True and ev["model"] == "small" and len(ev["attempts"]) == 3


def test_a_timeout_falls_back_without_retrying_the_slow_model(setup: Any) -> None:
    h, local = setup(catalog(timeout_s=0.5), behaviour={"coder": "slow"}, slow_s=3.0)
    t0 = time.perf_counter()
    res = h.session.complete(CODE)
    assert time.perf_counter() - t0 < 2.5
    assert res.model == "small" and local.models_called() == ["coder", "small"]
    assert "timed out" in res.attempts[0]["error"]


def test_rate_limits_are_retried_then_fall_back(setup: Any) -> None:
    h, local = setup(catalog(retries=2), behaviour={"small": "busy"})
    res = h.session.complete(CHAT)
    assert res.model == "backup" and local.models_called() == ["small"] * 3 + ["backup"]
    assert h.sleeps == [pytest.approx(0.05), pytest.approx(0.1)]  # exponential backoff


def test_a_flaky_model_recovers_on_retry(setup: Any) -> None:
    h, local = setup(behaviour={"coder": "flaky"}, flaky_failures=1)
    res = h.session.complete(CODE)
    assert res.model == "coder" and not res.fallback_used and local.models_called() == ["coder", "coder"]
    assert h.router.cooldowns.cooling() == {}  # success clears the failure


def test_when_everything_fails_the_error_names_each_model_and_is_traced(setup: Any) -> None:
    h, _ = setup(catalog(retries=0), behaviour={"coder": "fail", "small": "fail", "backup": "fail"})
    with pytest.raises(NoRouteAvailable) as err:
        h.session.complete(CODE)
    assert all(f"{m}: HTTP 500" in err.value.message for m in ("coder", "small", "backup"))
    ev = h.events()[-1]
    assert ev["model"] is None and "coder" in ev["error"]


def test_identical_deterministic_calls_hit_the_cache(setup: Any) -> None:
    h, local = setup()
    params = {"temperature": 0.0, "max_tokens": 32}
    first = h.session.complete(CODE, params=params)
    second = h.session.complete(CODE, params=params)
    assert not first.cache_hit and second.cache_hit and second.content == first.content
    assert local.models_called() == ["coder"]
    assert second.cost_usd == 0.0
    h.session.complete(CODE, params={"temperature": 0.0, "max_tokens": 64})  # other params: another key
    h.session.complete(CODE, params={"temperature": 0.7})  # sampled: never cached by default
    h.session.complete(CODE, params={"temperature": 0.7})
    assert len(local.calls) == 4
    assert h.router.cache is not None and h.router.cache.stats().hits == 1
    assert [e["cache_hit"] for e in h.events()] == [False, True, False, False, False]


def test_the_cache_persists_across_router_instances(
    tmp_path: Path, fake_server: MakeFake, write_catalog: WriteCatalog
) -> None:
    local = fake_server()
    path = write_catalog(tmp_path / "router.yaml", catalog())
    for _ in range(2):
        r = RouterSession(
            Router(
                CatalogStore(path),
                local_base_url=local.base_url,
                intents=IntentEngine(None),
                cache=ResponseCache(path=tmp_path / "cache.sqlite"),
            )
        )
        r.complete(CODE, params={"temperature": 0})
        r.close()
    assert local.models_called() == ["coder"]


def test_residency_ranks_loaded_models_first_and_is_probed_sparingly(setup: Any) -> None:
    data = catalog()
    data["models"]["backup"]["priority"] = 1
    h, local = setup(data, loaded=["small"])
    d = h.router.plan(CHAT)
    assert d.primary.model == "small" and "loaded" in d.reason  # same priority: the loaded one wins
    assert [c.model for c in d.candidates[:2]] == ["small", "backup"]  # unloaded, "backup" sorts first by name
    h.router.plan(CHAT)
    assert local.probes == 1  # cached for a couple of seconds


def test_cost_breaks_ties_after_residency(setup: Any) -> None:
    data = catalog()
    data["models"]["backup"]["priority"] = 1
    data["models"]["small"]["cost_per_1m"] = 0.5
    h, _ = setup(data)
    assert h.router.plan(CHAT).primary.model == "backup"


def test_escalation_on_long_prompts_and_low_confidence(setup: Any, fake_server: MakeFake) -> None:
    remote = fake_server()
    os.environ.pop("GPU_TEST_KEY", None)
    h, _ = setup(catalog(remote, escalation={"long_prompt_tokens": 50, "min_confidence": 0.6, "topics": []}))
    long_prompt = [{"role": "user", "content": "Summarize this: " + "lorem ipsum dolor sit amet " * 20}]
    d = h.router.plan(long_prompt)
    assert d.escalated and d.primary.model == "big" and "long prompt" in d.reason
    low = h.router.plan(CHAT)  # rules found nothing: confidence 0.5 < 0.6
    assert low.escalated and "low intent confidence" in low.reason
    assert not h.router.plan(CODE).escalated  # one rule family: confidence 0.9


def test_explicit_escalation_target_and_presets(setup: Any, fake_server: MakeFake) -> None:
    remote = fake_server()
    data = catalog(remote, escalation={"to": ["backup"], "topics": [r"\bcompliance\b"]})
    data["presets"] = {"auto-local": {"local_only": True}, "auto-fast": {"prefer": ["fast"], "escalation": False}}
    h, _ = setup(data)
    msg = [{"role": "user", "content": "Is our logging setup fine for compliance audits?"}]
    assert h.router.plan(msg).primary.model == "backup"
    assert h.router.plan(msg, router="auto-fast").primary.model == "small"
    local_only = h.router.plan(CODE, router="auto-local")
    assert "big" not in [c.model for c in local_only.candidates]
    assert h.router.names() == ["auto", "auto-local", "auto-fast"]
    with pytest.raises(ModelNotFound, match="auto-local"):
        h.router.plan(CODE, router="auto-cheap")


def test_budgets_stop_spending_on_a_model(setup: Any) -> None:
    data = catalog()
    data["budgets"] = [{"model": "coder", "max_tokens": 5}]
    h, local = setup(data)
    assert h.session.complete(CODE).model == "coder"
    nxt = h.router.plan(CODE)
    assert "coder" not in [c.model for c in nxt.candidates] and "over budget: coder" in nxt.reason
    assert h.session.complete(CODE).model == "small"  # the next in coder's chain
    assert local.models_called() == ["coder", "small"]


def test_catalog_edits_apply_without_a_new_router(setup: Any, tmp_path: Path, write_catalog: WriteCatalog) -> None:
    h, _ = setup()
    assert h.router.plan(CHAT).primary.model == "small"
    data = catalog()
    data["models"]["small"]["priority"] = 9
    path = write_catalog(tmp_path / "router.yaml", data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert h.router.plan(CHAT).primary.model == "backup"


def test_every_trace_line_is_complete_json(setup: Any) -> None:
    h, _ = setup(behaviour={"coder": "fail"})
    h.session.complete(CODE, params={"temperature": 0})
    h.session.complete(CHAT, params={"temperature": 0})
    h.session.complete(CHAT, params={"temperature": 0})
    lines = h.trace_path.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        ev = json.loads(line)
        assert set(ev) == set(TRACE_FIELDS)
        assert ev["latency_ms"] >= 0 and ev["prompt_tokens"] > 0 and isinstance(ev["confidence"], float)
        assert ev["kind"] == "route" and ev["router"] == "auto" and ev["prompt"]
    assert [json.loads(x)["cache_hit"] for x in lines] == [False, False, True]


def test_a_stream_falls_back_while_nothing_was_sent_and_commits_at_its_first_chunk(setup: Any) -> None:
    h, local = setup(behaviour={"coder": "fail"}, itl_s=0.02)
    stream = h.session.stream(CODE, params={"temperature": 0})
    assert stream.model == "small" and stream.fallback_used  # chosen before a single chunk was handed on
    pieces = list(stream)
    assert len(pieces) > 3 and "".join(pieces) == f"[small] {CODE[0]['content']}"
    assert local.models_called() == ["coder", "coder", "small"]
    res = stream.result
    assert res is not None and res.completion_tokens == len(pieces) and res.fallback_used
    ev = h.events()[-1]
    assert ev["model"] == "small" and ev["fallback_used"] and ev["error"] is None and len(ev["attempts"]) == 3
    # The streamed answer was complete and deterministic: the next identical request is a cache hit.
    again = h.session.stream(CODE, params={"temperature": 0})
    assert "".join(again) == "".join(pieces) and again.result is not None and again.result.cache_hit


def test_a_stream_that_breaks_after_its_first_chunk_raises_and_is_traced(setup: Any) -> None:
    from lokal.errors import UpstreamError

    h, local = setup(behaviour={"coder": "cut"})
    stream = h.session.stream(CODE)
    got: list[str] = []
    with pytest.raises(UpstreamError, match="coder failed mid-stream"):
        for piece in stream:
            got.append(piece)
    assert got == ["[coder] ", "Write "]  # committed: no silent switch to another model's answer
    assert local.models_called() == ["coder"]
    ev = h.events()[-1]
    assert ev["model"] == "coder" and "closed the stream before it finished" in ev["error"]
    assert "coder" in h.router.cooldowns.cooling()
