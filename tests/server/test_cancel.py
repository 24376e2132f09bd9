"""Abandoned work stops, forced unloads say so, and no request field is accepted and ignored.

A real `lokal serve` on a synthetic model big enough that its work takes seconds (a 3,000-token prompt takes
~4 s to read, 3,000 tokens ~12 s to write, on 2 cores), so a request that kept running after its client left
shows on /lokal/ps. Each mode runs on both llama.cpp paths: one sequence at a time (--parallel 1, the single
worker) and continuous batching (--parallel 2, the batch worker).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from lokal.engines.llamacpp import SOLO_PREFILL_SECONDS
from lokal.gguf.synthetic import ModelShape, write_gguf
from tests.support.models import tiny_entry, write_catalog
from tests.support.server import LokalServer

pytestmark = pytest.mark.serial  # bounds on how soon the engine is free: run alone, not beside other tests

SLOW = ModelShape(8, 384, 8, 8, 768, 320, 4096)  # ~23 MB in f16
MODES = ["single", "batched"]
# Seconds from the client leaving to the engine being free. A prompt read alone goes in chunks paced to
# SOLO_PREFILL_SECONDS (0.75 s), and a chunk late in the prompt runs over its pace because attention grows along
# it (1.06 s seen on CI); left running, the work would take ~3 s (the prompt) or ~12 s (the answer) more.
FREE_WITHIN = 2 * SOLO_PREFILL_SECONDS


SLOTS = {"single": 1, "batched": 2}


@pytest.fixture(scope="module")
def slow_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("slow") / "slow-f16.gguf", SLOW, "f16", like="tiny", seed=0)


def _server(mode: str, slow: Path, tiny: Path, factory: pytest.TempPathFactory) -> LokalServer:
    home = factory.mktemp(f"cancel-{mode}")
    write_catalog(home, [tiny_entry("slow", slow, ["general"], context_length=4096),
                         tiny_entry("tiny", tiny, ["general"])])
    # One compute thread (llama.cpp, and torch for MiniLM): with threads = cores they wait for each other at
    # every op, and while other processes hold a core (tests running in parallel) a 16-token chunk took 2.3 s
    # instead of 10 ms and one MiniLM embedding 0.55 s instead of 0.08 s (measured): that would time the
    # machine, not lokal's cancellation.
    env = {"LOKAL_N_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return LokalServer(home, env=env, args=["--parallel", str(SLOTS[mode])])


@pytest.fixture(scope="module")
def single(slow_gguf: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    with _server("single", slow_gguf, tiny_gguf, tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module")
def batched(slow_gguf: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    with _server("batched", slow_gguf, tiny_gguf, tmp_path_factory) as server:
        yield server


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def srv(mode: str, request: pytest.FixtureRequest) -> LokalServer:
    server: LokalServer = request.getfixturevalue(mode)
    assert _chat(server, "warm", max_tokens=1, timeout=30).status_code == 200  # loaded (again, after an unload)
    return server


# -- helpers -----------------------------------------------------------------------------------------------------
def _body(prompt: str, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    return {"model": "slow", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": stream}


def _chat(server: LokalServer, prompt: str, max_tokens: int, timeout: float, stream: bool = False) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", json=_body(prompt, max_tokens, stream), timeout=timeout)


def _long_prompt(tag: str) -> str:
    """~3,000 tokens, starting with `tag` so that no slot has it cached from an earlier test."""
    return f"{tag} " + "a b c d " * 740


def _model(server: LokalServer) -> dict[str, Any]:
    models = httpx.get(server.url + "/lokal/ps", timeout=5).json()["models"]
    return next((m for m in models if m["alias"] == "slow"), {})


def _idle(model: dict[str, Any]) -> bool:
    return not model or (model["slots_busy"] == 0 and model["waiting"] == 0 and model["active"] == 0)


def _seconds_until_idle(server: LokalServer, limit: float = FREE_WITHIN) -> float:
    t0 = time.monotonic()
    while not _idle(model := _model(server)):
        if time.monotonic() - t0 > 15:
            break
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert took <= limit, f"engine busy {took:.2f} s after the client left (limit {limit} s): {model}"
    return took


def _wait_busy(server: LokalServer, active: int, slots_busy: int = 1, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        m = _model(server)
        if m and m["active"] >= active and m["slots_busy"] >= slots_busy:
            return
        time.sleep(0.02)
    raise AssertionError(f"expected {active} requests in flight: {_model(server)}")


@pytest.fixture
def client(srv: LokalServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=srv.base_url, api_key="lokal", max_retries=0, timeout=30) as c:
        yield c  # closed here, not by the garbage collector inside a later test


# -- abandoned work stops ----------------------------------------------------------------------------------------
def test_non_streamed_request_whose_client_timed_out_stops(srv: LokalServer) -> None:
    with pytest.raises(httpx.ReadTimeout):
        _chat(srv, "write on", max_tokens=3000, timeout=0.5)  # ~12 s of decoding if nobody stopped it
    _seconds_until_idle(srv)


def test_stream_abandoned_mid_decode_stops(srv: LokalServer) -> None:
    with httpx.stream("POST", srv.base_url + "/chat/completions", json=_body("go", 3000, stream=True),
                      timeout=30) as resp:
        lines = resp.iter_lines()
        assert sum(next(lines).startswith("data:") for _ in range(8)) >= 3
    _seconds_until_idle(srv)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_request_abandoned_while_its_prompt_is_read_stops(srv: LokalServer, stream: bool) -> None:
    with cf.ThreadPoolExecutor(1) as pool:
        call = pool.submit(_chat, srv, _long_prompt(f"prefill-{stream}"), 5, 1.0, stream)
        _wait_busy(srv, active=1)  # in a slot, reading its prompt (no byte comes before it is read)
        with pytest.raises(httpx.ReadTimeout):
            call.result()
    _seconds_until_idle(srv)


def test_queued_requests_whose_clients_left_never_run(srv: LokalServer, mode: str) -> None:
    slots = SLOTS[mode]
    with contextlib.ExitStack() as running:
        readers = []  # kept: a line iterator that is garbage-collected closes its connection
        for i in range(slots):  # every slot busy with a long stream
            resp = running.enter_context(httpx.stream(
                "POST", srv.base_url + "/chat/completions", json=_body(f"run {i}", 3000, True), timeout=30))
            readers.append(resp.iter_lines())
            assert next(readers[-1]).startswith("data:")
        _wait_busy(srv, active=slots, slots_busy=slots)
        with cf.ThreadPoolExecutor(3) as pool:  # queued behind them, then gone
            calls = [pool.submit(_chat, srv, f"queued {i}", 3000, 0.5) for i in range(3)]
            for call in calls:
                with pytest.raises(httpx.ReadTimeout):
                    call.result()
        assert _model(srv)["slots_busy"] == slots  # the running ones run on
    _seconds_until_idle(srv)  # had a queued one started, it would decode 3,000 tokens


# -- forced unload -----------------------------------------------------------------------------------------------
def test_forced_unload_fails_requests_in_flight_with_an_openai_error(srv: LokalServer, client: OpenAI) -> None:
    with httpx.stream("POST", srv.base_url + "/chat/completions", json=_body("stream on", 3000, True),
                      timeout=30) as running, cf.ThreadPoolExecutor(3) as pool:
        lines = running.iter_lines()
        assert next(lines).startswith("data:")
        whole = pool.submit(_chat, srv, "whole", 3000, 30)  # runs in the second slot, or waits (one slot)
        queued_stream = pool.submit(_chat, srv, "queued stream", 3000, 30, True)

        def sdk_call() -> Exception | None:
            try:
                client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "sdk"}],
                                               max_tokens=3000)
            except openai.APIStatusError as exc:
                return exc
            return None

        sdk = pool.submit(sdk_call)
        _wait_busy(srv, active=4)
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/lokal/models/slow/unload", params={"force": "true"}, timeout=30)
        took = time.monotonic() - t0
        assert r.status_code == 200 and r.json() == {"unloaded": True}
        assert took < 2.0, took
        rest = [line for line in lines if line]
        for resp in (whole.result(), queued_stream.result()):  # no byte was sent yet: a plain HTTP error
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "model_unloaded"
        err = sdk.result()
        assert isinstance(err, openai.APIStatusError) and err.status_code == 503 and err.code == "model_unloaded"
    # The stream had started: it ends with one error frame, and no [DONE] that would make it look complete.
    assert rest and rest[-1].startswith("data: {")
    frame = json.loads(rest[-1][len("data: "):])
    assert set(frame["error"]) == {"message", "type", "param", "code"}
    assert frame["error"]["code"] == "model_unloaded" and frame["error"]["type"] == "server_error"
    assert "data: [DONE]" not in rest
    assert _model(srv) == {}
    assert _chat(srv, "again", max_tokens=2, timeout=30).status_code == 200  # loads again on the next request


def test_sdk_stream_raises_the_error_frame(srv: LokalServer, client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "sdk stream"}], max_tokens=3000, stream=True
    )
    chunks = iter(stream)
    next(chunks)
    httpx.post(srv.url + "/lokal/models/slow/unload", params={"force": "true"}, timeout=30)
    with pytest.raises(openai.APIError) as info:
        for _ in chunks:
            pass
    assert info.value.code == "model_unloaded"
