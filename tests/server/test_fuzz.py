"""Bounded fuzzing of every JSON route on a real server: whatever the body, the answer is never a 5xx.

Bodies are built from the fields the routes know, with values of every JSON type (huge numbers, lone
surrogates, control-token text, deep nesting), so most requests reach validation and some reach the engine.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import LokalServer

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/openai/download", "/v1/rag/search"]
FIELDS = [
    "model", "messages", "prompt", "input", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
    "seed", "stream", "stream_options", "response_format", "n", "echo", "dimensions", "encoding_format", "query",
    "k", "mode", "collection", "tools", "logprobs", "token",
]  # fmt: skip
REAL = st.just("tiny")
MODELS = st.sampled_from(["tiny", "all-minilm-l6-v2", "no-such", "../etc/passwd", "tiny:1", ""])

NASTY = ["<|im_start|>system", "</s>", "[INST]", "\x00", "\ud800", "a\udfffb", "\ud83d", "é" * 10, "", " " * 50]
text = st.text(
    alphabet=st.characters(codec=None, categories=("L", "N", "P", "S", "Zs", "Cc", "Cs")), max_size=40
) | st.sampled_from(NASTY)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | text
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                      max_leaves=12)  # fmt: skip
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "nobody"])},
    optional={"content": text | text | values, "name": text, "tool_call_id": text},
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "model": MODELS,
    "messages": st.lists(message, max_size=3) | values,
    "max_tokens": st.integers(min_value=-5, max_value=64) | values,
    "stream": st.booleans(),
}
REQUIRED = {  # mostly well-formed bodies, so the fuzz reaches the engine and not only validation
    "/v1/chat/completions": {
        "model": REAL | MODELS,
        "messages": st.lists(message, min_size=1, max_size=3),
        "max_tokens": field_values["max_tokens"],  # without it the default (4096 tokens) makes the fuzz slow
    },
    "/v1/completions": {
        "model": REAL | MODELS,
        "prompt": text | st.lists(text, max_size=3),
        "max_tokens": field_values["max_tokens"],
    },
    "/v1/embeddings": {"model": st.just("all-minilm-l6-v2") | MODELS, "input": text | st.lists(text, max_size=3)},
    "/openai/download": {"model": MODELS | values},
    "/v1/rag/search": {"query": text},
}


def route_and_body() -> st.SearchStrategy[tuple[str, Any]]:
    def for_route(route: str) -> st.SearchStrategy[tuple[str, Any]]:
        optional = {k: field_values.get(k, values) for k in FIELDS if k not in REQUIRED[route]}
        shaped = st.fixed_dictionaries(REQUIRED[route], optional=optional)
        loose = st.dictionaries(st.sampled_from(FIELDS), st.none(), max_size=8).flatmap(
            lambda keys: st.fixed_dictionaries({k: field_values.get(k, values) for k in {*keys, "max_tokens"}})
        )
        return st.tuples(st.just(route), shaped | loose | values)

    return st.sampled_from(ROUTES[:3] * 2 + ROUTES[3:]).flatmap(for_route)


def real_request() -> st.SearchStrategy[tuple[str, Any]]:
    """Well-formed requests for the real models with odd values in the fields the engine reads."""
    sampling = {
        "stop": text | st.lists(text, max_size=4),
        "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "temperature": st.floats(min_value=0, max_value=2),
        "stream": st.booleans(),
    }
    chat = st.fixed_dictionaries(
        {"model": REAL, "max_tokens": st.integers(min_value=1, max_value=32),
         "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": text}),
                              min_size=1, max_size=3)},
        optional=sampling,
    )  # fmt: skip
    completion = st.fixed_dictionaries(
        {"model": REAL, "prompt": text, "max_tokens": st.integers(min_value=1, max_value=32)}, optional=sampling
    )
    embed = st.fixed_dictionaries({"model": st.just("all-minilm-l6-v2"), "input": text | st.lists(text, max_size=3)})
    return (
        st.tuples(st.just("/v1/chat/completions"), chat)
        | st.tuples(st.just("/v1/completions"), completion)
        | st.tuples(st.just("/v1/embeddings"), embed)
    )


@pytest.mark.timeout(240)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=real_request())
def test_no_odd_value_gets_a_5xx_from_the_engine(lokal_server: LokalServer, case: tuple[str, Any]) -> None:
    _check(lokal_server, *case)


@pytest.mark.timeout(240)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=route_and_body())
def test_no_body_gets_a_5xx(lokal_server: LokalServer, case: tuple[str, Any]) -> None:
    _check(lokal_server, *case)


def _check(lokal_server: LokalServer, route: str, payload: Any) -> None:
    raw = json.dumps(payload, ensure_ascii=True).encode()
    resp = httpx.post(
        lokal_server.url + route, content=raw, headers={"Content-Type": "application/json"}, timeout=60
    )
    if resp.status_code == 503 and resp.headers.get("retry-after"):
        return  # a full queue is a legitimate, retryable answer
    assert resp.status_code < 500, (route, raw[:300], resp.status_code, resp.text[:500])
    if resp.status_code >= 400 and route != "/openai/download":
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
