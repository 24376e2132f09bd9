"""The onnx engine's batching (og.Engine static batches, Generator-path requests beside them), in-process and
through a real `lokal serve` with the official openai client: the API the llama.cpp engine serves."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lokal.catalog.spec import ModelSpec
from lokal.engines.base import ChatMessage, GenerationEvent, GenerationRequest
from lokal.engines.ortgenai import OrtGenAIEngine
from lokal.engines.ortgenai_batch import (
    STATIC_BATCH,
    BatchedOrtGenAIEngine,
    EngineSequence,
    GeneratorSequence,
    generator_reason,
)
from lokal.errors import InvalidRequest
from lokal.runtime.batch_worker import BatchWorker
from lokal.runtime.worker import ModelWorker
from lokal.runtime.workers import make_worker
from tests.engines.onnx_model import build_tiny_onnx, onnx_entry
from tests.support.models import write_catalog
from tests.support.server import LokalServer

CONTEXT = 4096  # room for a generation long enough to be cut by a disconnect
SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4}  # ~2k tok/s: cancellable


def _req(text: str = "Hello there", **kw: Any) -> GenerationRequest:
    fields: dict[str, Any] = {"max_tokens": 12, "temperature": 0, **kw}
    return GenerationRequest(messages=(ChatMessage("user", text),), **fields)


def test_requests_the_batch_cannot_serve_go_to_a_generator() -> None:
    assert generator_reason(_req()) is None
    assert generator_reason(_req(stop=("x",), json_mode=True, repeat_penalty=1.2, top_k=5)) is None
    assert generator_reason(_req(seed=3)) is None  # greedy: a seed changes nothing
    assert generator_reason(_req(seed=3, temperature=0.7)) == "seed"
    assert generator_reason(_req(logprobs=0)) == "logprobs"
    for kw in ({"logit_bias": {5: 1.0}}, {"presence_penalty": 0.5}, {"frequency_penalty": 0.5}, {"min_p": 0.1}):
        assert generator_reason(_req(**kw)) is not None, kw


# -- on a tiny model -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("onnx_ir", reason="the model builder needs onnx-ir")
    return build_tiny_onnx(tmp_path_factory.mktemp("onnx-batch"), context=CONTEXT, **SHAPE)


def _spec(folder: Path) -> ModelSpec:
    return ModelSpec.model_validate(onnx_entry("tiny-onnx", folder, context_length=CONTEXT))


@pytest.fixture(scope="module")
def batched(folder: Path) -> Iterator[BatchedOrtGenAIEngine]:
    spec = _spec(folder)
    e = BatchedOrtGenAIEngine(n_threads=1)
    e.load(spec, spec.variants[0], folder)
    yield e
    e.unload()


@pytest.fixture(scope="module")
def single(folder: Path) -> Iterator[OrtGenAIEngine]:
    spec = _spec(folder)
    e = OrtGenAIEngine(n_threads=1)
    e.load(spec, spec.variants[0], folder)
    yield e
    e.unload()


def _alone(engine: OrtGenAIEngine, req: GenerationRequest) -> tuple[str, GenerationEvent]:
    events = list(engine.generate(req, threading.Event()))
    return "".join(e.text for e in events), events[-1]


def _together(engine: BatchedOrtGenAIEngine, reqs: list[GenerationRequest]) -> list[tuple[str, GenerationEvent]]:
    return _drive(engine, [engine.open(r) for r in reqs])


def _drive(engine: BatchedOrtGenAIEngine, seqs: list[Any]) -> list[tuple[str, GenerationEvent]]:
    got: list[list[GenerationEvent]] = [[] for _ in seqs]
    try:
        while not all(s.done for s in seqs):
            engine.step()
            for events, seq in zip(got, seqs, strict=True):
                events.extend(seq.take_events())
    finally:
        for seq in seqs:
            engine.close(seq)
    return [("".join(e.text for e in events), events[-1]) for events in got]


def test_a_batch_decodes_each_request_as_it_would_alone(batched: BatchedOrtGenAIEngine, single: OrtGenAIEngine) -> None:
    assert batched.batched and batched.slots == STATIC_BATCH
    assert batched.info.extra["batching"] == "static" and batched.info.extra["batch_max"] == STATIC_BATCH
    full, _ = _alone(single, _req("The quick brown fox", max_tokens=30))
    reqs = [
        _req(),  # different prompt lengths share the batch (padded by GenAI)
        _req("The quick brown fox", max_tokens=30, stop=(full[10:13],)),
        _req("hi", max_tokens=40, json_mode=True),
        _req("Local models", max_tokens=9, ignore_eos=True),
    ]
    steps = batched.steps
    results = _together(batched, reqs)
    for req, (text, last) in zip(reqs, results, strict=True):
        want_text, want_last = _alone(single, req)
        assert (text, last.finish_reason, last.usage) == (want_text, want_last.finish_reason, want_last.usage)
    assert results[1][1].finish_reason == "stop" and full[10:13] not in results[1][0]
    assert isinstance(json.loads(results[2][0]), dict)
    assert results[3][1].usage is not None and results[3][1].usage.completion_tokens == 9
    # Decoded together: about max_tokens steps for all four, not the sum of theirs.
    assert batched.steps - steps <= 41
    assert max(batched.recent_batch_sizes) == 4


def test_what_the_batch_cannot_do_runs_beside_it_on_a_generator(
    batched: BatchedOrtGenAIEngine, single: OrtGenAIEngine
) -> None:
    reqs = [_req(), _req(seed=5, temperature=1.0), _req(logprobs=2), _req(logit_bias={7: 100.0})]
    before = batched.info.extra["generator_requests"]
    seqs = [batched.open(r) for r in reqs]
    assert [type(s) for s in seqs] == [EngineSequence, GeneratorSequence, GeneratorSequence, GeneratorSequence]
    assert batched.info.extra["generator_requests"] == before + 3  # counted in /lokal/ps
    results = _drive(batched, seqs)
    for req, (text, last) in zip(reqs, results, strict=True):
        want_text, want_last = _alone(single, req)
        assert (text, last.usage) == (want_text, want_last.usage)
    assert max(batched.recent_batch_sizes) == 4  # one batch member and three generators per step


def test_logprobs_come_back_beside_the_batch(batched: BatchedOrtGenAIEngine) -> None:
    seq = batched.open(_req(logprobs=2, max_tokens=5))
    events: list[GenerationEvent] = []
    while not seq.done:
        batched.step()
        events.extend(seq.take_events())
    batched.close(seq)
    entries = [lp for e in events for lp in e.logprobs]
    assert len(entries) == 5 and all(len(lp.top) == 2 for lp in entries)


def test_closing_one_member_leaves_the_others_and_a_late_request_waits_for_the_batch(
    batched: BatchedOrtGenAIEngine, single: OrtGenAIEngine
) -> None:
    keep, drop = _req(max_tokens=20), _req("The quick brown fox", max_tokens=20)
    a, b = batched.open(keep), batched.open(drop)
    got: list[GenerationEvent] = []
    dropped: list[GenerationEvent] = []
    while len(dropped) < 3:  # the first steps may be spent gathering the batch
        batched.step()
        got.extend(a.take_events())
        dropped.extend(b.take_events())
    batched.close(b)  # the client left: no more events for it
    late = batched.open(_req("hi", max_tokens=4))
    while not a.done:
        batched.step()
        got.extend(a.take_events())
        assert not b.take_events()
        if not a.done:
            assert not late.take_events()  # static batching: it starts when the running batch has ended
    batched.close(a)
    text, last = "".join(e.text for e in got), got[-1]
    want_text, want_last = _alone(single, keep)
    assert (text, last.usage) == (want_text, want_last.usage)
    late_events: list[GenerationEvent] = []
    while not late.done:
        batched.step()
        late_events.extend(late.take_events())
    batched.close(late)
    assert late_events[-1].usage is not None and late_events[-1].usage.completion_tokens == 4


def test_a_bad_grammar_is_refused_when_opened(batched: BatchedOrtGenAIEngine) -> None:
    with pytest.raises(InvalidRequest) as err:
        batched.open(_req(grammar='root ::= "a" (('))
    assert err.value.param == "grammar"
    assert not batched._running


def test_in_process_generate_from_another_thread_makes_its_own_engine(
    batched: BatchedOrtGenAIEngine, single: OrtGenAIEngine
) -> None:
    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(_alone(batched, _req())[0]))
    t.start()
    t.join(30)
    assert results == [_alone(single, _req())[0]]
    assert _alone(batched, _req())[0] == results[0]  # and back on this thread


def test_parallel_one_is_the_one_at_a_time_engine(folder: Path) -> None:
    spec = _spec(folder)
    e = BatchedOrtGenAIEngine(parallel=1)
    e.load(spec, spec.variants[0], folder)
    try:
        assert not e.batched and "batching" not in e.info.extra
        worker = make_worker(e, "tiny-onnx", concurrency="batch")
        assert isinstance(worker, ModelWorker)
        worker.close(unload=False)
    finally:
        e.unload()


def test_a_model_og_engine_refuses_still_serves_on_generators(
    folder: Path, single: OrtGenAIEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime_genai as og

    def refuse(model: object) -> None:
        raise RuntimeError("Static Engine does not support model-managed KV caches.")

    monkeypatch.setattr(og, "Engine", refuse)
    spec = _spec(folder)
    e = BatchedOrtGenAIEngine(n_threads=1)
    e.load(spec, spec.variants[0], folder)
    try:
        assert e.batched and e.info.extra["batching"] == "none"
        assert "model-managed KV caches" in str(e.info.extra["batching_note"])
        reqs = [_req(), _req("hi", json_mode=True, max_tokens=30)]
        seqs = [e.open(r) for r in reqs]
        assert all(isinstance(s, GeneratorSequence) for s in seqs)
        for req, (text, last) in zip(reqs, _drive(e, seqs), strict=True):
            assert (text, last.usage) == (_alone(single, req)[0], _alone(single, req)[1].usage)
    finally:
        e.unload()


def test_the_batch_worker_drives_it(batched: BatchedOrtGenAIEngine) -> None:
    worker = make_worker(batched, "tiny-onnx", concurrency="batch")
    assert isinstance(worker, BatchWorker)
    worker.close(unload=False)


# -- through lokal serve -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LokalServer]:
    home = tmp_path_factory.mktemp("onnx-batch-home")
    # chatml names the prompt format, as catalog entries do: lokal's Hermes template shows the tools.
    write_catalog(home, [onnx_entry("tiny-onnx", folder, context_length=CONTEXT, chat_template="chatml")])
    with LokalServer(home) as srv:
        body = {"model": "tiny-onnx", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        httpx.post(srv.base_url + "/chat/completions", json=body, timeout=60).raise_for_status()  # loaded
        yield srv


@pytest.fixture(scope="module")
def client(server: LokalServer) -> Iterator[Any]:
    from openai import OpenAI

    with OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as c:
        yield c  # closed here, not by the garbage collector inside a later test


MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]


def _chat(client: Any, **kw: Any) -> Any:
    return client.chat.completions.create(model="tiny-onnx", messages=MESSAGES, **{"max_tokens": 16, **kw})


def test_streaming_reports_usage_and_matches_the_whole_answer(client: Any) -> None:
    whole = _chat(client, temperature=0)
    chunks = list(_chat(client, temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    last = chunks[-1]
    assert not last.choices and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens == 16
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]


def test_stop_cuts_the_answer(client: Any) -> None:
    full = _chat(client, temperature=0, max_tokens=30).choices[0].message.content
    stop = full[8:11]
    r = _chat(client, temperature=0, max_tokens=30, stop=[stop])
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_seed_repeats_a_sampled_answer(client: Any) -> None:
    def sampled(seed: int) -> str:
        return str(_chat(client, temperature=1.0, top_p=1.0, seed=seed, max_tokens=24).choices[0].message.content)

    assert sampled(11) == sampled(11)
    assert sampled(11) != sampled(12)


def test_json_object_and_json_schema(client: Any) -> None:
    r = _chat(client, temperature=0, max_tokens=60, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    r = _chat(
        client,
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert isinstance(json.loads(r.choices[0].message.content)["ok"], bool)


def test_n_choices_decode_together(client: Any) -> None:
    r = _chat(client, temperature=0, n=3, max_tokens=10)
    texts = [c.message.content for c in r.choices]
    assert len(texts) == 3 and len(set(texts)) == 1  # greedy: the same answer three times
    assert r.usage.completion_tokens == 30


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        # An enum keeps a random model's arguments short: a free string runs to max_tokens.
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Oslo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_forced_tool_calls_come_back_as_tool_calls(client: Any, server: LokalServer) -> None:
    assert _ps_model(server)["tool_format"] == "hermes"
    # One call: with parallel calls allowed, a random model keeps starting another until max_tokens.
    one = {"parallel_tool_calls": False, "temperature": 0, "max_tokens": 80}
    r = _chat(client, tools=[WEATHER], tool_choice="required", **one)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and calls
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)["city"] in ("Paris", "Oslo")
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = _chat(client, tools=[WEATHER], tool_choice=named, **one)
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    # The call and its result go back through the template: the next turn renders them.
    turn = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    r = client.chat.completions.create(
        model="tiny-onnx", messages=turn, tools=[WEATHER], tool_choice="none", max_tokens=4
    )
    first = _chat(client, tools=[WEATHER], tool_choice="none", max_tokens=1)
    assert r.usage.prompt_tokens > first.usage.prompt_tokens + len(calls[0].function.arguments) // 4


def test_tool_choice_auto_answers_free_text_with_the_tools_in_the_prompt(client: Any) -> None:
    # auto: guidance cannot start a grammar at a trigger word, so the answer is free text that lokal's tool-call
    # parser reads (random weights write no call); the tools still reach the prompt.
    r = _chat(client, tools=[WEATHER], temperature=0, max_tokens=8)
    plain = _chat(client, temperature=0, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 10


def test_only_an_upfront_grammar_reaches_guidance() -> None:
    from lokal.engines.base import GenerationRequest
    from lokal.engines.ortgenai import guidance

    grammar = 'root ::= "{" "}"'
    lazy = guidance(GenerationRequest(messages=[], grammar=grammar, grammar_triggers=("<tool_call>",)))
    assert lazy is None
    upfront = guidance(GenerationRequest(messages=[], grammar=grammar))
    assert upfront is not None and upfront[0] == "lark_grammar" and upfront[2] == "grammar"
    json_mode = guidance(GenerationRequest(messages=[], json_mode=True))
    assert json_mode is not None and json_mode[0] == "json_schema"


def _ps_model(server: LokalServer) -> dict[str, Any]:
    models: list[dict[str, Any]] = httpx.get(server.url + "/lokal/ps").json()["models"]
    return models[0]


def test_concurrent_streams_share_batches_and_ps_says_how(client: Any, server: LokalServer) -> None:
    _chat(client, temperature=0, max_tokens=1)  # loaded
    with cf.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _chat(client, temperature=0, max_tokens=40), range(4)))
    assert len({a.choices[0].message.content for a in answers}) == 1
    model = _ps_model(server)
    assert model["slots"] == STATIC_BATCH and model["batching"] == "static"
    assert "waits for the batch" in model["batching_note"]
    metrics = httpx.get(server.url + "/metrics").text
    sizes = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("lokal_batch_size")]
    assert sizes and sizes[0] > 1  # steps decoded several sequences


def test_model_ps_prints_how_the_engine_batches(client: Any, server: LokalServer) -> None:
    from typer.testing import CliRunner

    from lokal.cli.main import app

    _chat(client, temperature=0, max_tokens=1)  # loaded
    result = CliRunner().invoke(app, ["model", "ps", "--base-url", server.url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tiny-onnx" in result.output and "/4" in result.output  # slots busy of 4
    assert "static batches of up to 4" in " ".join(result.output.split())


def test_client_disconnect_stops_the_generation(server: LokalServer) -> None:
    def tokens_out() -> float:
        metrics = httpx.get(server.url + "/metrics").text
        rows = [line for line in metrics.splitlines() if line.startswith('lokal_tokens_total{direction="out"')]
        return float(rows[0].rsplit(" ", 1)[1]) if rows else 0.0

    body = {
        "model": "tiny-onnx",
        "messages": MESSAGES,
        "max_tokens": CONTEXT - 64,
        "ignore_eos": True,
        "stream": True,
    }
    before = tokens_out()
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        assert any(next(lines).startswith("data:") for _ in range(6))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        model = _ps_model(server)
        if model["active"] == 0 and model["slots_busy"] == 0:
            break
        time.sleep(0.02)
    assert model["active"] == 0 and model["slots_busy"] == 0, model
    assert tokens_out() - before < CONTEXT / 2  # stopped long before max_tokens
