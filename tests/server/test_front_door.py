"""The front door against a real `lokal serve`: hosts, origins, keys, body size and type, malformed input.

Each refusal is checked both ways: the attack is refused, and the legitimate request next to it still works.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from starlette.datastructures import Headers

from lokal.server.front_door import cross_site, host_allowed, is_json, split_host
from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer

KEY = "front-door-secret"
CHAT = {"model": "door", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("front-door")
    write_catalog(home, [tiny_entry("door", tiny_gguf, ["general"])])
    env = {"LOKAL_API_KEY": KEY, "LOKAL_MAX_BODY_MB": "1"}
    with LokalServer(home, env=env, args=["--model", "door"]) as srv:
        yield srv


def _auth(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **extra}


def _error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code, err
    return err


# -- the pure rules -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("localhost:5273", True),
        ("127.0.0.1:5273", True),
        ("[::1]:5273", True),
        ("LOCALHOST", True),
        ("app.localhost:5273", True),
        ("10.1.2.3", True),  # an IP literal cannot be rebound
        ("evil.test:5273", False),
        ("localhost.evil.test", False),
        ("", False),
        ("box.lan:5273", True),  # configured below
    ],
)
def test_host_rule(host: str, ok: bool) -> None:
    assert host_allowed(host, {"box.lan"}) is ok
    assert host_allowed(host, {"*"})


def test_split_host() -> None:
    assert split_host("[::1]:5273") == "::1"
    assert split_host("::1") == "::1"
    assert split_host("Example.COM:80") == "example.com"


def test_cross_site_rule() -> None:
    def check(origins: set[str], **headers: str) -> bool:
        return cross_site(Headers(headers={k.replace("_", "-"): v for k, v in headers.items()}), "127.0.0.1:9", origins)

    assert not check(set())  # curl, the openai client: no browser headers
    assert not check(set(), origin="http://127.0.0.1:9")  # lokal's own page
    assert not check(set(), sec_fetch_site="same-origin")
    assert not check(set(), sec_fetch_site="none")  # typed into the address bar
    assert check(set(), origin="http://evil.test")
    assert check(set(), origin="null")  # sandboxed iframe, file:// page
    assert check(set(), sec_fetch_site="cross-site")  # <img src=...>, a link
    assert check(set(), sec_fetch_site="same-site")  # another port of localhost is another app
    assert not check({"http://localhost:3000"}, origin="http://localhost:3000")
    assert not check({"*"}, origin="http://evil.test")


def test_json_media_types() -> None:
    assert is_json("application/json")
    assert is_json("application/json; charset=utf-8")
    assert is_json("application/merge-patch+json")
    assert not is_json("text/plain")
    assert not is_json("application/x-www-form-urlencoded")
    assert not is_json("")


# -- keys ---------------------------------------------------------------------------------------------------
def _routes(server: LokalServer) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json", headers=_auth()).json()
    routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
    assert len(routes) >= 20, routes  # the OpenAI, admin, Foundry, RAG and router routes are all there
    return routes


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "door", path)


_BODIES: dict[str, Any] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": "door", "prompt": "hi", "max_tokens": 2},
    "/v1/embeddings": {"model": "door", "input": "hi"},
    "/openai/download": {"model": "door"},
    "/v1/rag/search": {"query": "hi"},
    "/v1/messages": {"model": "door", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "door", "messages": [{"role": "user", "content": "hi"}]},
}


def test_every_route_needs_the_key(server: LokalServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for method, path in _routes(server):
            url, body = _fill(path), _BODIES.get(path)
            if path in ("/health",):
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}x"}):
                resp = client.request(method, url, json=body, headers=headers)
                if path.startswith("/v1/messages"):  # Anthropic's error shape there
                    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
                else:
                    _error(resp, 401, "invalid_api_key")
            right = client.request(method, url, json=body, headers=_auth())
            assert right.status_code != 401 and right.status_code < 500, (method, path, right.text)


def test_open_paths_need_no_key(server: LokalServer) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/static/js/api.js").status_code == 200
    # /metrics is protected when a key is set (LOKAL_METRICS_PUBLIC=1 opens it)
    _error(httpx.get(server.url + "/metrics"), 401)
    assert httpx.get(server.url + "/metrics", headers=_auth()).status_code == 200


def test_official_client_with_and_without_key(closing: contextlib.ExitStack, server: LokalServer) -> None:
    good = closing.enter_context(openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0))
    assert good.chat.completions.create(**CHAT).choices[0].finish_reason in {"stop", "length"}
    bad = closing.enter_context(openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0))
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_anthropic_client_sends_its_key_as_x_api_key(closing: contextlib.ExitStack, server: LokalServer) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": "hi"}]
    good = closing.enter_context(anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0))
    assert good.messages.create(model="door", max_tokens=2, messages=messages).stop_reason in {"end_turn", "max_tokens"}
    assert good.messages.count_tokens(model="door", messages=messages).input_tokens > 0
    bad = closing.enter_context(anthropic.Anthropic(base_url=server.url, api_key="nope", max_retries=0))
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model="door", max_tokens=2, messages=messages)
    assert info.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "Incorrect API key provided."}}
    for headers in ({"x-api-key": KEY}, _auth(), {"x-api-key": "nope", **_auth()}):  # either header is enough
        assert httpx.get(server.base_url + "/models", headers=headers).status_code == 200
    for headers in ({"x-api-key": f"Bearer {KEY}"}, {"x-api-key": KEY + "x"}, {"Authorization": KEY}):
        _error(httpx.get(server.base_url + "/models", headers=headers), 401, "invalid_api_key")


def test_odd_authorization_header_is_a_401(server: LokalServer) -> None:
    raw = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    assert b" 401 " in head, head


# -- Host header (DNS rebinding) -----------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.test", "evil.test:5273", "localhost.evil.test", "attacker.example:80"])
def test_foreign_host_is_refused(server: LokalServer, host: str) -> None:
    for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions", CHAT)):
        resp = httpx.request(method, server.url + path, json=body, headers=_auth(Host=host))
        err = _error(resp, 403, "host_not_allowed")
        assert "--allowed-host" in err["message"]
    _error(httpx.get(server.url + "/health", headers={"Host": host}), 403, "host_not_allowed")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST:1234"])
def test_loopback_hosts_are_served(server: LokalServer, host: str) -> None:
    assert httpx.get(server.url + "/v1/models", headers=_auth(Host=host)).status_code == 200


# -- cross-site browser requests (CSRF) ----------------------------------------------------------------------
def test_cross_site_requests_are_refused(server: LokalServer) -> None:
    evil = {"Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"}
    for method, path, body in (
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/openai/download", {"model": "door"}),
        ("POST", "/lokal/models/door/load", None),
    ):
        resp = httpx.request(method, server.url + path, json=body, headers=_auth(**evil))
        assert "--cors" in _error(resp, 403, "cross_site_request")["message"]
    # Foundry's state-changing GETs, as an <img> or a link would send them: no Origin, only Sec-Fetch-Site
    for path in ("/openai/load/door", "/openai/unload/door", "/openai/unloadall"):
        resp = httpx.get(server.url + path, headers=_auth(**{"Sec-Fetch-Site": "cross-site"}))
        _error(resp, 403, "cross_site_request")
    # the playground page itself may be opened from a link on another site
    page = httpx.get(server.url + "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 200


def test_same_origin_browser_requests_pass(server: LokalServer) -> None:
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert httpx.post(server.base_url + "/chat/completions", json=CHAT, headers=_auth(**own)).status_code == 200


def test_cors_preflight_from_a_foreign_origin_is_refused(server: LokalServer) -> None:
    headers = {"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"}
    resp = httpx.options(server.base_url + "/chat/completions", headers=headers)
    assert resp.status_code >= 400
    assert "access-control-allow-origin" not in resp.headers


_NOT_JSON = [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


# -- request bodies ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", _NOT_JSON)
def test_json_routes_need_a_json_content_type(server: LokalServer, content_type: str | None) -> None:
    headers = _auth() if content_type is None else _auth(**{"Content-Type": content_type})
    for path, body in (("/v1/chat/completions", CHAT), ("/openai/download", {"model": "door"})):
        resp = httpx.post(server.url + path, content=json.dumps(body).encode(), headers=headers)
        assert "application/json" in _error(resp, 415, "unsupported_media_type")["message"]
    ok = httpx.post(
        server.base_url + "/chat/completions",
        content=json.dumps(CHAT).encode(),
        headers=_auth(**{"Content-Type": "application/json; charset=utf-8"}),
    )
    assert ok.status_code == 200


def test_body_size_limit(server: LokalServer) -> None:
    big = {"model": "door", "input": "x " * (700 * 1024)}  # 1.4 MB against the 1 MiB limit set above
    err = _error(httpx.post(server.base_url + "/embeddings", json=big, headers=_auth()), 413, "payload_too_large")
    assert "--max-body-mb" in err["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on the bytes actually read
        yield b'{"model": "door", "input": "'
        for _ in range(40):
            yield b"y" * 32768
        yield b'"}'

    resp = httpx.post(
        server.base_url + "/embeddings", content=chunks(), headers=_auth(**{"Content-Type": "application/json"})
    )
    _error(resp, 413, "payload_too_large")
    assert httpx.get(server.url + "/health").status_code == 200


def _local_port(resp: httpx.Response) -> int:
    stream = resp.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "door", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "door", "max_tokens": ' + b"9" * 5000 + b', "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "door", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
        b'{"model": "door", "messages": [{"role": "user", "content": "hi", "\\udfff": 1}]}',
        b'{"model": "door", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}',
        b"\xff\xfe{}",
    ],
    ids=["deep-arrays", "huge-int", "lone-surrogate", "surrogate-key", "surrogate-stop", "not-utf8"],
)
def test_malformed_bodies_are_400_and_keep_the_connection(server: LokalServer, raw: bytes) -> None:
    with httpx.Client(base_url=server.url, headers=_auth(**{"Content-Type": "application/json"}), timeout=30) as c:
        before = c.get("/v1/models")
        resp = c.post("/v1/chat/completions", content=raw)
        err = _error(resp, 400, "invalid_json")
        assert "malformed" in err["message"] or "surrogate" in err["message"]
        after = c.get("/v1/models")
        assert after.status_code == 200
        assert _local_port(before) == _local_port(resp) == _local_port(after)  # one keep-alive connection


def test_malformed_download_and_rag_bodies_are_400(server: LokalServer) -> None:
    headers = _auth(**{"Content-Type": "application/json"})
    deep = b"[" * 50_000 + b"]" * 50_000
    resp = httpx.post(server.url + "/openai/download", content=deep, headers=headers)
    assert resp.status_code == 400 and resp.json()["success"] is False
    resp = httpx.post(server.url + "/v1/rag/search", content=deep, headers=headers)
    assert resp.status_code in (400, 404), resp.text  # 404 when the RAG extra is not installed


# -- metrics -------------------------------------------------------------------------------------------------
def test_metrics_are_labelled_by_route_not_by_url(server: LokalServer) -> None:
    def series(client: httpx.Client) -> list[str]:
        return [line for line in client.get("/metrics").text.splitlines() if line.startswith("lokal_requests_total{")]

    with httpx.Client(base_url=server.url, headers=_auth(), timeout=60) as client:
        client.get("/v1/models/x-first")
        before = series(client)
        for i in range(120):
            client.get(f"/v1/models/x{i}")
        after = series(client)
        text = client.get("/metrics").text
    assert not any("x17" in line for line in after)
    assert any('endpoint="/v1/models/{model_id:path}"' in line and 'status="404"' in line for line in after)
    assert len(after) <= len(before) + 1, set(after) - set(before)  # /metrics's own series, at most
    assert 'model=""' not in text
