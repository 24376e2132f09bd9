"""`lokal model synth|load|unload|ps`, `lokal run` and `lokal serve`'s offline fallback, end to end."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from lokal.catalog.catalog import Catalog
from lokal.cli.main import app
from lokal.config import get_settings
from lokal.gguf.synthetic import is_synthetic
from tests.support.server import LokalServer

runner = CliRunner()


@pytest.mark.parametrize("quant", ["q4_0", "q8_0", "f16"])
def test_synth_registers_a_labelled_model_that_runs(lokal_home: Path, quant: str) -> None:
    res = runner.invoke(app, ["model", "synth", "--like", "tiny", "--quant", quant, "--alias", f"t-{quant}"])
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" in res.output
    spec = Catalog.load(get_settings()).get(f"t-{quant}")
    assert spec is not None and spec.synthetic
    path = Path(spec.variants[0].path or "")
    assert path.is_file() and is_synthetic(path)
    listed = runner.invoke(app, ["model", "list"])
    assert f"t-{quant}" in listed.output and "synthetic" in listed.output
    ran = runner.invoke(app, ["run", f"t-{quant}", "--prompt", "hello", "--max-tokens", "6", "--local"])
    assert ran.exit_code == 0, ran.output
    assert len(ran.stdout.strip()) > 0


@pytest.mark.slow  # ~50 s: writes the whole 0.5B model; the qwen branch is tested fast in tests/catalog/test_synth.py
def test_synth_of_a_real_shape_has_that_shape(lokal_home: Path) -> None:
    import gguf

    res = runner.invoke(app, ["model", "synth", "--like", "qwen2.5-0.5b", "--quant", "q4_0", "--alias", "q05"])
    assert res.exit_code == 0, res.output
    spec = Catalog.load(get_settings()).get("q05")
    assert spec is not None
    reader = gguf.GGUFReader(spec.variants[0].path or "")
    field = lambda k: int(reader.fields[k].parts[-1][0])  # noqa: E731
    assert field("llama.block_count") == 24
    assert field("llama.embedding_length") == 896
    assert field("llama.attention.head_count") == 14
    assert field("llama.attention.head_count_kv") == 2
    assert field("llama.feed_forward_length") == 4864
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 151936


def test_synth_refuses_unknown_and_moe_shapes(lokal_home: Path) -> None:
    res = runner.invoke(app, ["model", "synth", "--like", "gpt-oss-20b"])
    assert res.exit_code == 1 and "mixture-of-experts" in res.output
    res = runner.invoke(app, ["model", "synth", "--like", "nope"])
    assert res.exit_code == 1 and "no known shape" in res.output


def test_run_without_model_says_how_to_get_it(lokal_home: Path) -> None:
    res = runner.invoke(app, ["run", "qwen2.5-0.5b", "--prompt", "hi", "--local"])
    assert res.exit_code == 1
    assert "lokal model download qwen2.5-0.5b" in res.output


def test_load_ps_unload_talk_to_the_server(lokal_server: LokalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_PORT", str(lokal_server.port))
    get_settings.cache_clear()
    try:
        res = runner.invoke(app, ["model", "load", "tiny-coder", "--ttl", "120"])
        assert res.exit_code == 0, res.output
        assert "tiny-coder" in res.output
        res = runner.invoke(app, ["model", "ps", "--json"])
        assert '"tiny-coder"' in res.output
        res = runner.invoke(app, ["run", "tiny-coder", "--prompt", "x", "--max-tokens", "4"])
        assert res.exit_code == 0 and res.stdout.strip()
        res = runner.invoke(app, ["model", "unload", "tiny-coder"])
        assert res.exit_code == 0 and "unloaded" in res.output
        ps = httpx.get(lokal_server.url + "/lokal/ps").json()
        assert "tiny-coder" not in [m["alias"] for m in ps["models"]]
        res = runner.invoke(app, ["model", "load", "../x"])
        assert res.exit_code == 1 and "not valid" in res.output
    finally:
        get_settings.cache_clear()


def test_ps_without_server_is_a_clear_error(lokal_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.server import free_port

    monkeypatch.setenv("LOKAL_PORT", str(free_port()))
    get_settings.cache_clear()
    res = runner.invoke(app, ["model", "ps"])
    assert res.exit_code == 1 and "lokal serve" in res.output


def test_serve_offline_with_no_model_starts_on_labelled_synthetic_demo(tmp_path: Path) -> None:
    with LokalServer(tmp_path) as srv:
        models = httpx.get(srv.base_url + "/models").json()["data"]
        demo = [m for m in models if m["id"] == "lokal-demo-synthetic"]
        assert demo and demo[0]["lokal"]["synthetic"] is True
        r = httpx.post(
            srv.base_url + "/chat/completions",
            timeout=60,
            json={
                "model": "lokal-demo-synthetic",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5,
            },
        )
        assert r.status_code == 200
        log = srv.log()
        assert "SYNTHETIC" in log and "lokal model download qwen2.5-0.5b" in log
        # A fallback the user did not ask for is no permanent part of their catalog.
        assert not (tmp_path / "catalog.yaml").exists()


def test_models_added_while_serving_appear_without_restart(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.models import standard_entries, write_catalog

    write_catalog(tmp_path, standard_entries(tiny_gguf))
    with LokalServer(tmp_path, args=["--model", "tiny"]) as srv:
        monkeypatch.setenv("LOKAL_HOME", str(tmp_path))
        get_settings.cache_clear()
        try:
            res = runner.invoke(app, ["model", "add", str(tiny_gguf), "--alias", "late-arrival"])
            assert res.exit_code == 0, res.output
        finally:
            get_settings.cache_clear()
        ids = [m["id"] for m in httpx.get(srv.base_url + "/models").json()["data"]]
        assert "late-arrival" in ids
        r = httpx.post(
            srv.base_url + "/chat/completions",
            timeout=60,
            json={"model": "late-arrival", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3},
        )
        assert r.status_code == 200, r.text
        good = (tmp_path / "catalog.yaml").read_text()
        (tmp_path / "catalog.yaml").write_text("models: [ {alias: broken\n")  # a YAML syntax error
        assert httpx.get(srv.base_url + "/models").status_code == 200  # last good catalog kept
        assert "late-arrival" in [m["id"] for m in httpx.get(srv.base_url + "/models").json()["data"]]
        # one bad entry beside good ones: it is skipped, the others stay
        (tmp_path / "catalog.yaml").write_text(good.replace("models:\n", "models:\n- {alias: broken}\n", 1))
        listed = httpx.get(srv.base_url + "/models")
        assert listed.status_code == 200
        ids = [m["id"] for m in listed.json()["data"]]
        assert "late-arrival" in ids and "broken" not in ids
