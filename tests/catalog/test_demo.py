"""The offline demo follows the installed engine: a GGUF where llama-cpp-python is installed, else an ONNX
Runtime GenAI folder; the catalog lists a variant for each demo model on disk, labelled synthetic."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lokal.catalog.catalog import Catalog
from lokal.catalog.demo import DEMO_ALIAS, demo_onnx_path, demo_path, demo_spec
from lokal.catalog.synth import demo_engine, ensure_demo
from lokal.config import Settings
from lokal.engines.base import ChatMessage, GenerationRequest
from tests.support.server import LokalServer


@pytest.mark.parametrize(
    ("present", "engine"),
    [({"llamacpp", "onnx"}, "llamacpp"), ({"onnx"}, "onnx"), ({"llamacpp"}, "llamacpp"), (set(), "llamacpp")],
)
def test_the_demo_engine_follows_what_is_installed(present: set[str], engine: str) -> None:
    assert demo_engine(lambda name: name in present) == engine


def test_onnx_demo_is_written_once_and_listed_as_an_onnx_variant(settings: Settings) -> None:
    assert demo_spec(settings) is None
    spec = ensure_demo(settings, "onnx")
    [variant] = spec.variants
    assert (variant.engine, variant.device, variant.path) == ("onnx", "cpu", str(demo_onnx_path(settings)))
    assert spec.synthetic and spec.alias == DEMO_ALIAS and "SYNTHETIC" in (spec.description or "")
    assert not demo_path(settings).exists()  # no GGUF for an engine that is not there
    listed = Catalog.load(settings).get(DEMO_ALIAS)
    assert listed is not None and listed.synthetic and listed.variants == spec.variants
    stamp = (demo_onnx_path(settings) / "model.onnx").stat().st_mtime_ns
    ensure_demo(settings, "onnx")
    assert (demo_onnx_path(settings) / "model.onnx").stat().st_mtime_ns == stamp
    assert not (settings.home / "catalog.yaml").exists()


def test_gguf_demo_and_both_demos_gguf_first(settings: Settings) -> None:
    spec = ensure_demo(settings, "llamacpp")
    assert [v.engine for v in spec.variants] == ["llamacpp"] and demo_path(settings).is_file()
    both = ensure_demo(settings, "onnx")  # e.g. llama-cpp-python uninstalled since: the demo it can run
    assert [v.engine for v in both.variants] == ["llamacpp", "onnx"]
    assert len({v.id for v in both.variants}) == 2


def test_demo_module_stays_free_of_numpy() -> None:
    code = "import sys, lokal.catalog.demo; print('numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_onnx_demo_streams_on_the_real_engine(settings: Settings) -> None:
    from lokal.engines.ortgenai import OrtGenAIEngine

    spec = ensure_demo(settings, "onnx")
    [variant] = spec.variants
    engine = OrtGenAIEngine()
    engine.load(spec, variant, Path(variant.path or ""))
    try:
        # The folder's own ChatML template (tokenizer_config.json) renders the prompt.
        assert engine.info.extra["chat_template"] == "tokenizer" and engine.info.extra["synthetic"] is True
        req = GenerationRequest(messages=(ChatMessage("user", "Hello"),), max_tokens=8, temperature=0)
        assert engine.prompt_text(req) == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        events = list(engine.generate(req, threading.Event()))
        pieces = [e.text for e in events if e.text]
        last = events[-1]
        assert last.usage is not None and last.usage.completion_tokens == 8 and last.finish_reason == "length"
        assert len(pieces) > 1 and "".join(pieces).isascii()
        again = "".join(e.text for e in engine.generate(req, threading.Event()))
        assert again == "".join(pieces)  # greedy: the same noise twice
    finally:
        engine.unload()


# Stands in for the base install: llama-cpp-python is not importable in the server's process.
NO_LLAMA_CPP = "import sys\nsys.modules['llama_cpp'] = None\n"


@pytest.mark.slow
def test_serve_with_nothing_cached_and_no_llama_cpp_streams_the_onnx_demo(
    closing: contextlib.ExitStack, tmp_path: Path
) -> None:
    from openai import OpenAI

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_LLAMA_CPP)
    path = os.pathsep.join(p for p in [str(hook), os.environ.get("PYTHONPATH", "")] if p)
    home = tmp_path / "home"
    with LokalServer(home, env={"PYTHONPATH": path}) as server:
        client = closing.enter_context(OpenAI(base_url=server.base_url, api_key="unused", max_retries=0))
        [demo] = [m for m in client.models.list().data if m.id == DEMO_ALIAS]
        info = demo.model_extra or {}
        assert info["lokal"]["synthetic"] is True
        assert (info["lokal"]["engine"], info["lokal"]["variant"]) == ("onnx", f"{DEMO_ALIAS}-onnx-cpu:1")
        stream = client.chat.completions.create(
            model=DEMO_ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, stream=True
        )
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert len(pieces) > 1
        assert "SYNTHETIC" in server.log()
    assert (home / "models" / "synthetic" / DEMO_ALIAS / "onnx" / "genai_config.json").is_file()
    assert not (home / "models" / "synthetic" / DEMO_ALIAS / f"{DEMO_ALIAS}-q8_0.gguf").exists()
    assert not (home / "catalog.yaml").exists()
