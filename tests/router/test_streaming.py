"""Routed answers stream token by token through a real `lokal serve`: model="auto" with remote candidates served
by scripted upstreams on 127.0.0.1 (known time to first token and inter-token delay), one refusing connections,
one answering 500, one dying mid-stream. Read with the official openai client, timed client-side."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.support.scripted import Script, ScriptedServer
from tests.support.server import LokalServer, free_port

TOKENS = 8
ITL_S = 0.08
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a short story about a lighthouse"}]
Chunks = openai.Stream[ChatCompletionChunk]


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("routed-home")
    with (
        ScriptedServer(Script(ttft_s=0.05, itl_s=ITL_S, tokens=TOKENS)) as good,
        ScriptedServer(Script(status=500)) as broken,
        # Three words, then the connection drops mid-body (no finish, no [DONE]).
        ScriptedServer(Script(reply="part0 part1 part2 part3", die_after=3)) as dying,
    ):
        dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connections are refused
        catalog = {
            "endpoints": {
                "good": {"base_url": good.base_url},
                "broken": {"base_url": broken.base_url},
                "dead": {"base_url": dead},
                "dying": {"base_url": dying.base_url},
            },
            "models": {
                "story": {"endpoint": "good", "upstream_model": "story-70b", "priority": 0},
                "refuses": {
                    "endpoint": "dead",
                    "capabilities": ["general", "fast"],
                    "priority": 1,
                    "fallbacks": ["errors"],
                },
                "errors": {"endpoint": "broken", "priority": 2, "fallbacks": ["story"]},
                "cut": {"endpoint": "dying", "priority": 3},
            },
            "policy": {"detector": "rules", "backoff_s": 0.01, "escalation": {"enabled": False}},
            "presets": {
                "auto-failing": {"models": ["refuses", "errors", "story"], "prefer": ["fast"]},
                "auto-cut": {"models": ["cut"]},
            },
        }
        (home / "router.yaml").write_text(yaml.safe_dump(catalog), encoding="utf-8")
        with LokalServer(home) as server:
            yield server


@pytest.fixture(scope="module")
def client(routed: LokalServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=routed.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c  # closed here, not by the garbage collector inside a later test


def _trace(server: LokalServer, trace_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5  # written once the stream has ended, just after the client saw [DONE]
    while True:
        for f in sorted((Path(server.home) / "traces").glob("router-*.jsonl")):
            for line in f.read_text().splitlines():
                ev = json.loads(line)
                if ev["trace_id"] == trace_id:
                    return dict(ev)
        if time.monotonic() > deadline:
            raise AssertionError(f"no trace line for {trace_id}")
        time.sleep(0.05)


def test_model_auto_streams_a_remote_answer_token_by_token(routed: LokalServer, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=PROMPT,
        max_tokens=TOKENS,
        stream=True,
    )
    assert raw.headers["x-lokal-routed-model"] == "story" and raw.headers["x-lokal-router"] == "auto"
    arrivals: list[tuple[float, str]] = []
    models = set()
    for chunk in cast(Chunks, raw.parse()):
        models.add(chunk.model)
        assert chunk.usage is None  # the client did not ask for it (lokal did, for the trace)
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.perf_counter(), chunk.choices[0].delta.content))
    assert [t for _, t in arrivals] == [f"w{i} " for i in range(TOKENS)]  # one chunk per token, not one in all
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread >= 0.5 * (TOKENS - 1) * ITL_S, spread  # they arrived as the upstream wrote them
    assert models == {"story"}  # the routed alias, as in a whole answer
    ev = _trace(routed, raw.headers["x-lokal-trace-id"])
    assert ev["model"] == "story" and ev["error"] is None and not ev["fallback_used"]
    assert ev["completion_tokens"] == TOKENS and ev["kind"] == "route"


def test_usage_is_passed_on_when_the_client_asks(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=PROMPT,
            max_tokens=TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS


def test_a_refused_connection_and_a_500_fall_back_before_the_first_token(
    routed: LokalServer, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto-failing", messages=PROMPT, max_tokens=TOKENS, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in cast(Chunks, raw.parse()) if c.choices)
    assert text == "".join(f"w{i} " for i in range(TOKENS))  # no error reached the client
    assert raw.headers["x-lokal-routed-model"] == "story"
    ev = _trace(routed, raw.headers["x-lokal-trace-id"])
    assert ev["fallback_used"] is True and ev["model"] == "story" and ev["error"] is None
    failed = [(a["model"], a["error"]) for a in ev["attempts"] if a["error"]]
    assert [m for m, _ in failed] == ["refuses", "refuses", "errors", "errors"]  # retried once each
    assert "connection failed" in failed[0][1] and "HTTP 500" in failed[2][1]


def test_a_failure_mid_stream_ends_with_an_error_frame_and_is_traced(
    routed: LokalServer, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto-cut", messages=PROMPT, max_tokens=TOKENS, stream=True
    )
    got: list[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in cast(Chunks, raw.parse()):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["part0 ", "part1 ", "part2 "]  # what came before the failure was passed on
    assert "cut failed mid-stream" in err.value.message
    ev = _trace(routed, raw.headers["x-lokal-trace-id"])
    assert ev["model"] == "cut" and "mid-stream" in ev["error"]


def test_the_responses_api_reads_a_routed_stream(client: openai.OpenAI) -> None:
    client = client
    whole = client.responses.create(model="auto", input="Tell me a story", max_output_tokens=TOKENS)
    assert whole.output_text == "".join(f"w{i} " for i in range(TOKENS))
    events = list(client.responses.create(model="auto", input="Tell me a story", max_output_tokens=TOKENS, stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == [f"w{i} " for i in range(TOKENS)]
    assert events[-1].type == "response.incomplete"  # the upstream stopped at max_tokens (finish_reason "length")
