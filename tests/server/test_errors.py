"""Every bad input gets an OpenAI-shaped error with the right status, and the server stays up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.models import standard_entries, tiny_entry, write_catalog
from tests.support.server import LokalServer


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("errors-home")
    entries = standard_entries(tiny_gguf)
    entries.append(tiny_entry("missing-file", tiny_gguf.parent / "not-there.gguf", ["general"]))
    entries.append(
        {
            "alias": "not-downloaded",
            "variants": [{"id": "not-downloaded-cpu:1", "repo": "org/repo", "file": "model.gguf"}],
        }
    )
    write_catalog(home, entries)
    with LokalServer(home, args=["--model", "tiny"]) as srv:
        yield srv


def _chat(server: LokalServer, body: Any, raw: bytes | None = None) -> httpx.Response:
    url = server.base_url + "/chat/completions"
    if raw is not None:
        return httpx.post(url, content=raw, headers={"content-type": "application/json"})
    return httpx.post(url, json=body)


def _assert_error(resp: httpx.Response, status: int, kind: str, *needles: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == kind
    for n in needles:
        assert n in err["message"], err["message"]
    return dict(err)


OK = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

CASES: list[tuple[str, dict[str, Any] | None, bytes | None, int, str, tuple[str, ...]]] = [
    (
        "malformed json",
        None,
        b'{"model": "tiny", "messages": [',
        400,
        "invalid_request_error",
        ("malformed JSON",),
    ),
    ("not an object", None, b"[1, 2]", 400, "invalid_request_error", ("JSON object",)),
    (
        "unknown model",
        {**OK, "model": "nope"},
        None,
        404,
        "invalid_request_error",
        ("nope", "tiny", "tiny-coder"),
    ),
    (
        "not downloaded",
        {**OK, "model": "not-downloaded"},
        None,
        404,
        "invalid_request_error",
        ("lokal model download not-downloaded",),
    ),
    (
        "file vanished",
        {**OK, "model": "missing-file"},
        None,
        404,
        "invalid_request_error",
        ("not downloaded",),
    ),
    (
        "context too long",
        {**OK, "max_tokens": 5000},
        None,
        400,
        "invalid_request_error",
        ("maximum context length is 2048",),
    ),
    ("max_tokens zero", {**OK, "max_tokens": 0}, None, 400, "invalid_request_error", ("max_tokens",)),
    ("max_tokens negative", {**OK, "max_tokens": -5}, None, 400, "invalid_request_error", ("max_tokens",)),
    ("max_tokens absurd", {**OK, "max_tokens": 10**12}, None, 400, "invalid_request_error", ("absurd",)),
    ("empty messages", {**OK, "messages": []}, None, 400, "invalid_request_error", ("messages",)),
    (
        "bad role",
        {**OK, "messages": [{"role": "wizard", "content": "x"}]},
        None,
        400,
        "invalid_request_error",
        ("role",),
    ),
    ("path trick", {**OK, "model": "../../etc/passwd"}, None, 400, "invalid_request_error", ("not valid",)),
    ("path trick id", {**OK, "model": "tiny/../x:1"}, None, 400, "invalid_request_error", ("not valid",)),
    ("missing model", {"messages": OK["messages"]}, None, 400, "invalid_request_error", ("model",)),
    ("bad temperature", {**OK, "temperature": 9}, None, 400, "invalid_request_error", ("temperature",)),
    (
        "embeddings model in chat",
        {**OK, "model": "all-minilm-l6-v2"},
        None,
        400,
        "invalid_request_error",
        ("embeddings model",),
    ),
]


@pytest.mark.parametrize(("name", "body", "raw", "status", "kind", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_an_openai_error_and_server_survives(
    server: LokalServer,
    name: str,
    body: Any,
    raw: bytes | None,
    status: int,
    kind: str,
    needles: tuple[str, ...],
) -> None:
    _assert_error(_chat(server, body, raw), status, kind, *needles)
    ok = _chat(server, OK)
    assert ok.status_code == 200, ok.text


def test_context_error_code(server: LokalServer) -> None:
    err = _assert_error(_chat(server, {**OK, "max_tokens": 5000}), 400, "invalid_request_error")
    assert err["code"] == "context_length_exceeded"


def test_streaming_errors_arrive_before_any_event(server: LokalServer) -> None:
    r = _chat(server, {**OK, "max_tokens": 5000, "stream": True})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")


def test_unknown_route_and_embedding_errors(server: LokalServer) -> None:
    _assert_error(httpx.get(server.base_url + "/nothing"), 404, "not_found_error")
    r = httpx.post(server.base_url + "/embeddings", json={"model": "all-minilm-l6-v2", "input": []})
    _assert_error(r, 400, "invalid_request_error", "input")
    r = httpx.post(server.base_url + "/embeddings", json={"model": "tiny", "input": "x"})
    _assert_error(r, 400, "invalid_request_error", "not an embeddings model")


def test_api_key_is_enforced_when_set(tiny_gguf: Path, tmp_path: Path) -> None:
    write_catalog(tmp_path, standard_entries(tiny_gguf))
    with LokalServer(tmp_path, env={"LOKAL_API_KEY": "s3cret"}, args=["--model", "tiny"]) as srv:
        url = srv.base_url + "/chat/completions"
        _assert_error(httpx.post(url, json=OK), 401, "authentication_error", "API key")
        _assert_error(httpx.post(url, json=OK, headers={"Authorization": "Bearer wrong"}), 401, "authentication_error")
        assert httpx.post(url, json=OK, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200  # probes need no key
