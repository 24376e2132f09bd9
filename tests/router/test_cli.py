"""`lokal route`, `lokal pipeline` and `lokal trace` through the real CLI entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lokal.cli.main import app
from lokal.embeddings.onnx import ONNX_NAME
from lokal.router.intents import shipped_data_path
from tests.router.fakes import FakeOpenAI

runner = CliRunner()


@pytest.fixture
def env(
    tmp_path: Path,
    fake_server: Callable[..., FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
    write_catalog: Callable[[Path, dict[str, Any]], Path],
    onnx_dir: Path,
) -> dict[str, Any]:
    def scripted(messages: list[dict[str, Any]]) -> str:
        if messages[0]["content"].startswith("You plan work"):
            return "1. Write a Python function to parse dates\n2. Summarize the approach"
        return f"[small] {messages[-1]['content'][:40]}"

    local = fake_server(replies={"small": scripted})
    monkeypatch.setenv("LOKAL_ROUTER_ENCODER", "onnx")
    (tmp_path / "home" / "router").mkdir(parents=True)
    # The session's exported model, so that the CLI does not export its own.
    (tmp_path / "home" / "router" / ONNX_NAME).symlink_to(onnx_dir / ONNX_NAME)
    catalog = write_catalog(
        tmp_path / "router.yaml",
        {
            "models": {
                "small": {"capabilities": ["general", "summarize"], "priority": 1, "cost_per_1m": 0.1},
                "coder": {"capabilities": ["code"], "priority": 1, "cost_per_1m": 0.4},
            },
            "policy": {"detector": "rules"},
        },
    )
    common = ["--home", str(tmp_path / "home"), "--base-url", local.base_url, "--catalog", str(catalog)]
    return {"local": local, "catalog": catalog, "common": common, "tmp": tmp_path}


def test_route_dry_run_explains_without_calling(env: dict[str, Any]) -> None:
    r = runner.invoke(
        app, ["route", "Write a Python function that sorts a dict", "--dry-run", "--json", *env["common"]]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["intent"] == "code" and d["candidates"][0]["model"] == "coder" and d["decision_ms"] >= 0
    assert env["local"].calls == []


def test_route_answers_through_the_routed_model_and_traces(env: dict[str, Any]) -> None:
    trace = env["tmp"] / "t.jsonl"
    r = runner.invoke(
        app, ["route", "ask", "Summarize this memo: all good", "--json", "--trace", str(trace), *env["common"]]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["model"] == "small" and out["content"].startswith("[small]")
    assert json.loads(trace.read_text())["model"] == "small"


def test_route_reports_catalog_errors_clearly(env: dict[str, Any]) -> None:
    env["catalog"].write_text("models: {x: {capabilities: [telepathy]}}")
    r = runner.invoke(app, ["route", "hi", *env["common"]])
    assert r.exit_code == 1 and "unknown capability 'telepathy'" in r.output


def test_pipeline_streams_steps_and_writes_a_trace_that_trace_show_renders(env: dict[str, Any]) -> None:
    trace = env["tmp"] / "p.jsonl"
    r = runner.invoke(app, ["pipeline", "Parse dates faster and explain how", "--trace", str(trace), *env["common"]])
    assert r.exit_code == 0, r.output
    assert "step 1/2" in r.output and "step 2/2" in r.output and "answer" in r.output
    events = [json.loads(x) for x in trace.read_text().splitlines()]
    assert [e["kind"] for e in events] == ["plan", "step", "step", "refine"]
    assert events[1]["model"] == "coder"
    shown = runner.invoke(app, ["trace", "show", str(trace)])
    assert shown.exit_code == 0 and shown.output.count("coder") >= 1 and "refine" in shown.output
    tree = runner.invoke(app, ["trace", "show", str(trace), "--tree"])
    assert tree.exit_code == 0 and events[0]["trace_id"] in tree.output
    cost = runner.invoke(app, ["trace", "cost", str(trace), "--catalog", str(env["catalog"])])
    assert cost.exit_code == 0, cost.output
    assert "as routed" in cost.output and "small" in cost.output and "coder" in cost.output
    again = runner.invoke(app, ["pipeline", "Parse dates faster and explain how", "--json", *env["common"]])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["cache"]["hits"] == 4  # the sqlite cache under --home outlives the process


def test_route_eval_and_fit(env: dict[str, Any]) -> None:
    rows = [json.loads(x) for x in shipped_data_path("labeled-heldout.jsonl").read_text().splitlines()][::10]
    labeled = env["tmp"] / "labeled.jsonl"
    labeled.write_text("\n".join(json.dumps(r) for r in rows))
    home = str(env["tmp"] / "home")
    r = runner.invoke(app, ["route", "eval", str(labeled), "--json", "--home", home])
    assert r.exit_code == 0, r.output
    reports = {x["method"]: x for x in json.loads(r.output)["reports"]}
    assert set(reports) == {"rules", "semantic", "combined"}
    assert all(sum(map(sum, x["confusion"])) == len(rows) for x in reports.values())
    assert reports["combined"]["accuracy"] > reports["rules"]["accuracy"]
    fit_rows = env["tmp"] / "fit.jsonl"
    fit_rows.write_text("\n".join(json.dumps(r) for r in rows[:12]))
    out = env["tmp"] / "fit.json"
    f = runner.invoke(app, ["route", "fit", str(fit_rows), "--out", str(out), "--home", home])
    assert f.exit_code == 0, f.output
    assert json.loads(out.read_text())["n_examples"] == 12
    labeled.write_text("\n".join(json.dumps(r) for r in rows[:7]))
    table = runner.invoke(app, ["route", "eval", str(labeled), "--fit", str(out), "--home", home])
    assert table.exit_code == 0 and "confusion" in table.output and "summary" in table.output


def test_route_prints_the_answer_as_it_streams_in(tmp_path: Path) -> None:
    """`lokal route` in its own process against a scripted upstream: the words reach stdout one by one."""
    import os
    import subprocess
    import sys
    import time

    import yaml

    from tests.support.scripted import Script, ScriptedServer

    tokens, itl = 6, 0.15
    catalog = tmp_path / "router.yaml"
    catalog.write_text(
        yaml.safe_dump({"models": {"m": {"capabilities": ["general"]}}, "policy": {"detector": "rules"}})
    )
    with ScriptedServer(Script(ttft_s=0.05, itl_s=itl, tokens=tokens)) as srv:
        cmd = [sys.executable, "-m", "lokal", "route", "Tell me a story", "--home", str(tmp_path / "home")]
        cmd += ["--base-url", srv.base_url, "--catalog", str(catalog), "--max-tokens", str(tokens)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}) as proc:
            assert proc.stdout is not None
            seen: list[tuple[float, str]] = []
            text = ""
            while chunk := os.read(proc.stdout.fileno(), 4096):
                text += chunk.decode()
                seen.append((time.perf_counter(), text))
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    assert text.split() == [f"w{i}" for i in range(tokens)]
    first = next(t for t, so_far in seen if "w0" in so_far)
    last = next(t for t, so_far in seen if f"w{tokens - 1}" in so_far)
    assert last - first >= 0.5 * (tokens - 1) * itl  # printed as they came, not at the end
