"""Model accuracy: a detector is scored on the model the router's policy chooses, not only on the label."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from lokal.cli.main import app
from lokal.router.catalog import load_catalog, parse_catalog
from lokal.router.engine import IntentEngine
from lokal.router.evaluate import Labeled, chosen_model, evaluate, read_labeled, score_predictions
from lokal.router.intents import GENERAL, RuleDetector, load_intent_spec, shipped_data_path

runner = CliRunner()

# code and refactor share the coder; summarize and general share the small model; reasoning has its own.
SHARED = {
    "models": {
        "coder": {"capabilities": ["code", "refactor"], "priority": 1},
        "small": {"capabilities": ["general", "summarize"], "priority": 1},
        "big": {"capabilities": ["reasoning", "general"], "priority": 3, "tier": 2},
    }
}
ONE_MODEL = {"models": {"only": {"capabilities": ["general", "code", "refactor", "reasoning", "summarize"]}}}

# Rules detector: label right, label wrong but the same model, and a real misroute.
PROMPTS = [
    Labeled("Write a Python function that reverses a list", "code"),  # code -> coder: right
    Labeled("Please split this Python class into two smaller ones", "refactor"),  # code: same model (coder)
    Labeled("Give me the bottom line of this memo", "summarize"),  # general: same model (small)
    Labeled("Which of two loans is cheaper over five years, 4% or 3.5% plus a fee?", "reasoning"),  # general
]


def test_two_intents_on_one_model_are_right_for_the_model_and_wrong_for_the_label() -> None:
    cat = parse_catalog(SHARED)
    rep = evaluate("rules", RuleDetector(load_intent_spec()), PROMPTS, cat)
    assert [e["predicted"] for e in rep.errors] == ["code", GENERAL, GENERAL]
    assert rep.accuracy == 0.25
    assert rep.models is not None
    assert rep.models.accuracy == 0.75
    (wrong,) = rep.models.errors
    assert wrong["intent"] == "reasoning" and wrong["expected_model"] == "big" and wrong["chosen_model"] == "small"
    assert rep.models.intent_models["refactor"] == rep.models.intent_models["code"] == "coder"
    assert not rep.models.trivial and rep.models.distinct_models == 3
    d = rep.to_dict()
    assert d["model_accuracy"] == 0.75 and d["accuracy"] == 0.25 and d["model_errors"] == rep.models.errors


def test_the_choice_is_the_policys_ranking_with_an_empty_health() -> None:
    cat = parse_catalog(
        {
            "models": {
                "tiny": {"capabilities": ["general"], "priority": 1, "max_context": 64},
                "roomy": {"capabilities": ["general"], "priority": 2, "max_context": 8192},
                "cheap-coder": {"capabilities": ["code"], "priority": 1, "cost_per_1m": 0.1},
                "dear-coder": {"capabilities": ["code"], "priority": 1, "cost_per_1m": 0.9},
            }
        }
    )
    assert chosen_model(cat, "code", "short") == "cheap-coder"  # equal priority: cost decides
    assert chosen_model(cat, "translation", "short") == "tiny"  # nobody declares it: the general models
    assert chosen_model(cat, "translation", "x" * 2000) == "roomy"  # ~500 tokens do not fit 64
    # The same intent on a long prompt picks the larger model on both sides: no error.
    rows = [Labeled("x" * 2000, "summarize")]
    assert score_predictions("m", rows, [GENERAL], cat).models.accuracy == 1.0  # type: ignore[union-attr]


def test_a_one_model_catalog_says_model_accuracy_is_trivial() -> None:
    rep = evaluate("rules", RuleDetector(load_intent_spec()), PROMPTS, parse_catalog(ONE_MODEL))
    assert rep.models is not None and rep.models.trivial and rep.models.accuracy == 1.0
    assert rep.accuracy < 1.0
    assert rep.models.note() == "catalog has 1 distinct model: model accuracy is trivially 1"
    assert score_predictions("m", PROMPTS, [p.intent for p in PROMPTS]).models is None  # no catalog, no figure


def _labeled_file(tmp_path: Path) -> Path:
    path = tmp_path / "labeled.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": r.prompt, "intent": r.intent}) for r in PROMPTS))
    return path


def _catalog_file(tmp_path: Path, data: dict[str, Any], name: str) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_eval_reports_model_accuracy_in_json(tmp_path: Path) -> None:
    cat = _catalog_file(tmp_path, SHARED, "router.yaml")
    args = ["route", "eval", str(_labeled_file(tmp_path)), "--method", "rules", "--home", str(tmp_path / "h")]
    r = runner.invoke(app, [*args, "--catalog", str(cat), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["catalog"] == str(cat) and d["default_method"] == "combined"
    (rep,) = d["reports"]
    assert rep["method"] == "rules" and rep["accuracy"] == 0.25 and rep["model_accuracy"] == 0.75
    assert rep["distinct_models"] == 3 and rep["trivial"] is False
    assert rep["intent_models"]["refactor"] == "coder" and rep["intent_models"]["reasoning"] == "big"
    assert [e["chosen_model"] for e in rep["model_errors"]] == ["small"]
    # The active catalog (LOKAL_HOME/router.yaml) is used without --catalog.
    home = tmp_path / "h"
    home.mkdir()
    (home / "router.yaml").write_text(cat.read_text(), encoding="utf-8")
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["reports"][0]["model_accuracy"] == 0.75


def test_cli_eval_table_shows_model_accuracy_errors_and_the_trivial_case(tmp_path: Path) -> None:
    labeled = str(_labeled_file(tmp_path))
    home = str(tmp_path / "h")
    shared = _catalog_file(tmp_path, SHARED, "shared.yaml")
    r = runner.invoke(
        app, ["route", "eval", labeled, "-m", "rules", "--errors", "5", "--catalog", str(shared), "--home", home]
    )
    assert r.exit_code == 0, r.output
    assert "model accuracy 0.750" in r.output
    assert "wrong model small (want big" in r.output
    assert "catalog has 3 distinct models" in r.output
    one = _catalog_file(tmp_path, ONE_MODEL, "one.yaml")
    t = runner.invoke(app, ["route", "eval", labeled, "-m", "rules", "--catalog", str(one), "--home", home])
    assert t.exit_code == 0, t.output
    assert "catalog has 1 distinct model: model accuracy is trivially 1" in t.output
    bad = runner.invoke(app, ["route", "eval", labeled, "-m", "fuzzy", "--home", home])
    assert bad.exit_code == 1 and "unknown method" in bad.output


def test_shipped_workshop_catalog_and_held_out_v2_measure_something() -> None:
    cat = load_catalog(shipped_data_path("workshop-router.yaml"))
    spec = load_intent_spec()
    models = {i: chosen_model(cat, i, "") for i in spec.intents}
    assert models["code"] == models["refactor"] != models["reasoning"]
    assert models["general"] == models["summarize"] == models["classification"]
    assert len(set(models.values())) >= 3
    held = read_labeled(shipped_data_path("labeled-heldout-v2.jsonl"))
    assert len(held) >= 150 and {r.intent for r in held} == set(spec.intents)
    seen = {r.prompt for r in read_labeled(shipped_data_path("labeled-fit.jsonl"))}
    seen |= {r.prompt for r in read_labeled(shipped_data_path("labeled-heldout.jsonl"))}
    seen |= {e for v in spec.examples.values() for e in v}
    assert not seen & {r.prompt for r in held}


def test_v3_training_validation_and_test_sets_are_balanced_and_share_no_prompt_with_any_other_set() -> None:
    spec = load_intent_spec()
    sets = {
        name: read_labeled(shipped_data_path(name))
        for name in (
            "labeled-fit.jsonl",
            "labeled-heldout.jsonl",
            "labeled-heldout-v2.jsonl",
            "labeled-train-v3.jsonl",
            "labeled-validation-v3.jsonl",
            "labeled-heldout-v3.jsonl",
        )
    }
    # Written 40 per intent by three writers who saw neither each other's file nor the router; prompts already in
    # another set (the bat and the ball...) were dropped from validation (8) and test (11).
    least_of = {"labeled-train-v3.jsonl": 40, "labeled-validation-v3.jsonl": 36, "labeled-heldout-v3.jsonl": 35}
    for name, least in least_of.items():
        counts = Counter(r.intent for r in sets[name])
        assert set(counts) == set(spec.intents) and min(counts.values()) >= least, (name, counts)
    examples = {e for v in spec.examples.values() for e in v}
    for name in least_of:
        mine = {r.prompt for r in sets[name]}
        assert len(mine) == len(sets[name]) and not mine & examples
        for other, rows in sets.items():
            if other != name:
                assert not mine & {r.prompt for r in rows}, (name, other)


def test_model_accuracy_on_held_out_v2_with_the_workshop_catalog(intent_engine: IntentEngine) -> None:
    held = read_labeled(shipped_data_path("labeled-heldout-v2.jsonl"))
    cat = load_catalog(shipped_data_path("workshop-router.yaml"))
    found = intent_engine.detectors()
    assert found is not None
    reps = {
        name: evaluate(name, det, held, cat) for name, det in zip(("rules", "semantic", "combined"), found, strict=True)
    }
    model = {k: r.models.accuracy for k, r in reps.items() if r.models is not None}
    # Measured 0.735 / 0.901 / 0.920 (docs/router.md); margins for numeric noise, not for regressions.
    assert model["rules"] < 0.8
    assert model["semantic"] >= 0.88 and model["combined"] >= 0.9
    assert model["combined"] >= model["rules"] + 0.1
    for r in reps.values():  # sharing models forgives label errors, never adds any
        assert r.models is not None and r.models.accuracy >= r.accuracy


def test_without_a_router_file_the_default_comes_from_downloaded_local_models(home: Path) -> None:
    from lokal.router.evaluate import eval_catalog

    home.mkdir()
    entries = []
    for alias, caps in (("tiny-coder", ["code", "refactor"]), ("tiny-chat", ["general", "summarize"])):
        weights = home / f"{alias}.gguf"
        weights.write_bytes(b"GGUF")  # present on disk = downloaded, as the server counts it
        entries.append(
            {"alias": alias, "capabilities": caps, "variants": [{"id": f"{alias}-cpu:1", "path": str(weights)}]}
        )
    (home / "catalog.yaml").write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    cat, source = eval_catalog(home)
    assert cat is not None and "downloaded local model" in source
    assert {"tiny-coder", "tiny-chat"} <= set(cat.models)
    assert chosen_model(cat, "refactor", "") == "tiny-coder" and chosen_model(cat, "summarize", "") == "tiny-chat"
